//! Organizations the caller belongs to: list, create, read, rename, delete.

use poem::web::Data;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use uuid::Uuid;

use super::{ORGS_OF_CALLER, Organization, load_org, load_org_in_context};
use crate::{
    api::ApiTags,
    db::Access,
    error_set,
    http::{
        errors::{AUTHENTICATED, IN_ORG, JSON_BODY, KEY_OR_USER, PAGED, Problems},
        kernel::org_not_found,
        pagination::{Cursor, fetch_page, page_params},
        security::{BearerAuth, OrgAuth},
        validate::{Name, Slug, ValidJson},
    },
    page,
    state::State,
};

pub struct OrgsApi;

page! {
    /// One page of the caller's organizations.
    OrganizationPage of Organization
}

#[derive(Object)]
pub struct CreateOrganization {
    pub name: Name,
    /// Generated from the name when absent.
    pub slug: Option<Slug>,
}

#[derive(Object)]
pub struct UpdateOrganization {
    pub name: Option<Name>,
    pub slug: Option<Slug>,
}

#[derive(ApiResponse)]
pub enum ListOrgsResponse {
    /// The caller's organizations, oldest first.
    #[oai(status = 200)]
    Ok(Json<OrganizationPage>),
}

#[derive(ApiResponse)]
pub enum CreateOrgResponse {
    /// Created; the caller is its owner.
    #[oai(status = 201)]
    Created(Json<Organization>),
}

#[derive(ApiResponse)]
pub enum OrgResponse {
    /// The organization.
    #[oai(status = 200)]
    Ok(Json<Organization>),
}

#[derive(ApiResponse)]
pub enum DeleteOrgResponse {
    /// Deleted, with its memberships, invitations, projects and other tenant data.
    #[oai(status = 204)]
    NoContent,
}

const SLUG_TAKEN: &str = "The slug is taken (`slug_taken`).";

error_set! {
    pub ListOrgsErrors: [AUTHENTICATED, PAGED] {}
    pub CreateOrgErrors: [AUTHENTICATED, JSON_BODY] { 409 => SLUG_TAKEN }
    pub GetOrgErrors: [KEY_OR_USER, IN_ORG] {}
    pub UpdateOrgErrors: [AUTHENTICATED, IN_ORG, JSON_BODY] {
        403 => "The caller is below admin, decided by the policy (`forbidden`).",
        409 => SLUG_TAKEN,
    }
    pub DeleteOrgErrors: [AUTHENTICATED, IN_ORG] {
        403 => "The caller is not an owner, decided by the policy (`forbidden`).",
        409 => "A personal organization cannot be deleted (`personal_org`); an organization \
                with a live subscription is deleted once it is cancelled in the billing \
                portal (`subscription_exists`).",
    }
}

#[OpenApi(tag = "ApiTags::Organizations")]
impl OrgsApi {
    /// List my organizations
    ///
    /// Every organization the caller is a member of, with their role, oldest first.
    #[oai(path = "/v1/orgs", method = "get", operation_id = "list_orgs")]
    async fn list(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        /// Page size, 1-100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<ListOrgsResponse, Problems<ListOrgsErrors>> {
        let (limit, after) = page_params(limit.0, cursor.0.as_deref())?;
        let page = state
            .as_user(auth.principal(), Access::ReadOnly, async |tx| {
                let rows =
                    fetch_page(tx, ORGS_OF_CALLER, "o.created_at, o.id", limit, after).await?;
                let items = rows.iter().map(Organization::from).collect();
                Ok(OrganizationPage::from_rows(items, limit, |o| Cursor {
                    created_at: o.created_at,
                    id: o.id,
                }))
            })
            .await?;
        Ok(ListOrgsResponse::Ok(Json(page)))
    }

    /// Create an organization
    ///
    /// The caller becomes its owner.
    #[oai(path = "/v1/orgs", method = "post", operation_id = "create_org")]
    async fn create(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        body: ValidJson<CreateOrganization>,
    ) -> Result<CreateOrgResponse, Problems<CreateOrgErrors>> {
        let (name, slug) = (body.name.as_str(), body.slug.as_deref());
        let org = state
            .as_user(auth.principal(), Access::ReadWrite, async |tx| {
                let id: Uuid = tx
                    .query_one("select app.create_org($1, $2)", &[&name, &slug])
                    .await?
                    .get(0);
                load_org(tx, id).await
            })
            .await?;
        Ok(CreateOrgResponse::Created(Json(org)))
    }

    /// Get an organization
    ///
    /// 404 unless the caller is a member.
    #[oai(path = "/v1/orgs/:org_id", method = "get", operation_id = "get_org")]
    async fn get(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
    ) -> Result<OrgResponse, Problems<GetOrgErrors>> {
        let org = state
            .in_org(auth.principal(), org_id.0, Access::ReadOnly, async |tx| {
                load_org_in_context(tx).await
            })
            .await?;
        Ok(OrgResponse::Ok(Json(org)))
    }

    /// Update an organization
    ///
    /// Admins and owners change its name and slug; lower roles get 403 from the
    /// update policy. Only the fields present change.
    #[oai(
        path = "/v1/orgs/:org_id",
        method = "patch",
        operation_id = "update_org"
    )]
    async fn update(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        body: ValidJson<UpdateOrganization>,
    ) -> Result<OrgResponse, Problems<UpdateOrgErrors>> {
        let (name, slug) = (body.name.as_deref(), body.slug.as_deref());
        let org = state
            .in_org(auth.principal(), org_id.0, Access::ReadWrite, async |tx| {
                // The orgs_update_admin policy decides who may (403 for members and viewers).
                tx.execute(
                    "update app.orgs set name = coalesce($2, name), slug = coalesce($3, slug)
                      where id = $1",
                    &[&tx.org_id(), &name, &slug],
                )
                .await?;
                load_org_in_context(tx).await
            })
            .await?;
        Ok(OrgResponse::Ok(Json(org)))
    }

    /// Delete an organization
    ///
    /// Owners only (403 from the delete policy otherwise). Deletes its memberships,
    /// invitations, projects and all its data. A personal organization cannot be
    /// deleted (409 `personal_org`).
    #[oai(
        path = "/v1/orgs/:org_id",
        method = "delete",
        operation_id = "delete_org"
    )]
    async fn delete(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
    ) -> Result<DeleteOrgResponse, Problems<DeleteOrgErrors>> {
        state
            .delete_in_org(
                auth.principal(),
                org_id.0,
                "delete from app.orgs where id = $1",
                &[&org_id.0],
                org_not_found,
            )
            .await?;
        Ok(DeleteOrgResponse::NoContent)
    }
}
