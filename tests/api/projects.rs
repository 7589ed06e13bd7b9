//! Projects CRUD, validation, uniqueness and pagination.

use serde_json::json;
use uuid::Uuid;

use crate::helpers::spawn_app;

#[tokio::test]
async fn projects_crud() {
    let app = spawn_app().await;
    let u = app.signup("Ada").await;
    let base = format!("/v1/orgs/{}/projects", u.org_id);

    let created = app
        .post(
            &base,
            &u.token,
            json!({"name": " Apollo ", "description": "moon"}),
        )
        .await;
    let p = created.assert_status(201).clone();
    assert_eq!(p["name"], "Apollo", "names are trimmed");
    assert_eq!(p["org_id"], u.org_id.to_string());
    let id = p["id"].as_str().unwrap();

    let got = app.get(&format!("{base}/{id}"), &u.token).await;
    assert_eq!(got.assert_status(200)["description"], "moon");

    let renamed = app
        .patch(&format!("{base}/{id}"), &u.token, json!({"name": "Gemini"}))
        .await;
    let r = renamed.assert_status(200);
    assert_eq!(r["name"], "Gemini");
    assert_eq!(r["description"], "moon", "absent fields are unchanged");
    let cleared = app
        .patch(
            &format!("{base}/{id}"),
            &u.token,
            json!({"description": null}),
        )
        .await;
    assert!(
        cleared.assert_status(200)["description"].is_null(),
        "null clears"
    );

    let list = app.get(&base, &u.token).await;
    let items = list.assert_status(200)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);

    app.delete(&format!("{base}/{id}"), &u.token)
        .await
        .assert_status(204);
    app.get(&format!("{base}/{id}"), &u.token)
        .await
        .assert_problem(404, "not_found");
    app.delete(&format!("{base}/{id}"), &u.token)
        .await
        .assert_problem(404, "not_found");
    app.patch(&format!("{base}/{id}"), &u.token, json!({"name": "x"}))
        .await
        .assert_problem(404, "not_found");
}

#[tokio::test]
async fn project_names_are_validated_and_unique_per_org() {
    let app = spawn_app().await;
    let u = app.signup("Ada").await;
    let other = app.signup("Bob").await;
    let base = format!("/v1/orgs/{}/projects", u.org_id);
    app.post(&base, &u.token, json!({"name": ""}))
        .await
        .assert_problem(422, "validation_failed");
    app.post(&base, &u.token, json!({"name": "x".repeat(101)}))
        .await
        .assert_problem(422, "validation_failed");
    app.post(&base, &u.token, json!({"name": "é".repeat(100)}))
        .await
        .assert_status(201);
    app.post(&base, &u.token, json!({"name": "Dup"}))
        .await
        .assert_status(201);
    app.post(&base, &u.token, json!({"name": "Dup"}))
        .await
        .assert_problem(409, "name_taken");
    // The same name in another org is fine.
    app.post(
        &format!("/v1/orgs/{}/projects", other.org_id),
        &other.token,
        json!({"name": "Dup"}),
    )
    .await
    .assert_status(201);
    // Renaming onto a taken name conflicts and changes nothing.
    let id = app.create_project(&u, u.org_id, "Other").await;
    app.patch(&format!("{base}/{id}"), &u.token, json!({"name": "Dup"}))
        .await
        .assert_problem(409, "name_taken");
    let still = app.get(&format!("{base}/{id}"), &u.token).await;
    assert_eq!(still.assert_status(200)["name"], "Other");
    // Malformed ids in the path cannot name anything.
    app.get(&format!("{base}/not-a-uuid"), &u.token)
        .await
        .assert_problem(404, "not_found");
}

#[tokio::test]
async fn pagination_is_stable_and_complete() {
    let app = spawn_app().await;
    let u = app.signup("Ada").await;
    let base = format!("/v1/orgs/{}/projects", u.org_id);
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(app.create_project(&u, u.org_id, &format!("p{i}")).await);
    }
    let mut seen: Vec<Uuid> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => format!("{base}?limit=3"),
            Some(c) => format!("{base}?limit=3&cursor={c}"),
        };
        let page = app.get(&path, &u.token).await;
        let body = page.assert_status(200).clone();
        pages += 1;
        for item in body["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().parse().unwrap());
        }
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created, "every project once, in creation order");
    app.get(&format!("{base}?limit=0"), &u.token)
        .await
        .assert_problem(400, "invalid_parameter");
    app.get(&format!("{base}?cursor=garbage"), &u.token)
        .await
        .assert_problem(400, "invalid_cursor");
}

#[tokio::test]
async fn orgs_can_be_created_listed_and_read() {
    let app = spawn_app().await;
    let u = app.signup("Ada").await;
    let created = app
        .post("/v1/orgs", &u.token, json!({"name": "Acme, Inc."}))
        .await;
    let org = created.assert_status(201).clone();
    assert_eq!(org["slug"], "acme-inc");
    assert_eq!(org["role"], "owner");
    assert_eq!(org["personal"], false);
    let again = app
        .post("/v1/orgs", &u.token, json!({"name": "Acme Inc"}))
        .await;
    let slug = again.assert_status(201)["slug"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        slug.starts_with("acme-inc-") && slug != "acme-inc",
        "{slug}"
    );
    app.post(
        "/v1/orgs",
        &u.token,
        json!({"name": "X", "slug": "acme-inc"}),
    )
    .await
    .assert_problem(409, "slug_taken");
    app.post(
        "/v1/orgs",
        &u.token,
        json!({"name": "X", "slug": "Bad Slug"}),
    )
    .await
    .assert_problem(422, "validation_failed");
    let list = app.get("/v1/orgs", &u.token).await;
    assert_eq!(
        list.assert_status(200)["items"].as_array().unwrap().len(),
        3
    );
    let id = org["id"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/v1/orgs/{id}"), &u.token)
            .await
            .assert_status(200)["name"],
        "Acme, Inc."
    );
}
