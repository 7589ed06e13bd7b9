//! The signed-in user: read and edit their account, change their password, choose their
//! current organization. Everything runs as them (the kernel's `as_user`).

use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};
use secrecy::SecretString;
use uuid::Uuid;

use super::{Me, NoContentResponse, check_new_password, load_me};
use crate::{
    api::{
        ApiTags,
        tenancy::{Organization, load_org},
    },
    db::Access,
    error_set,
    http::{
        errors::{AUTHENTICATED, JSON_BODY, Problems},
        problem::ApiError,
        security::BearerAuth,
        validate::{Name, NewPassword, Password, ValidJson},
    },
    state::State,
};

pub struct MeApi;

#[derive(Object)]
pub struct UpdateMe {
    pub name: Option<Name>,
}

#[derive(Object)]
pub struct ChangePassword {
    pub current_password: Password,
    pub new_password: NewPassword,
}

#[derive(Object)]
pub struct SetCurrentOrganization {
    /// An organization the caller is a member of.
    pub org_id: Uuid,
}

#[derive(ApiResponse)]
pub enum MeResponse {
    /// The signed-in user and their organizations.
    #[oai(status = 200)]
    Ok(Json<Me>),
}

#[derive(ApiResponse)]
pub enum SetCurrentOrgResponse {
    /// The caller's current organization is now this one.
    #[oai(status = 200)]
    Ok(Json<Organization>),
}

error_set! {
    pub MeErrors: [AUTHENTICATED] {}
    pub UpdateMeErrors: [AUTHENTICATED, JSON_BODY] {}
    pub ChangePasswordErrors: [AUTHENTICATED, JSON_BODY] {
        403 => "The current password is wrong (`invalid_current_password`).",
        422 => "The new password is too short, too long or too common (`validation_failed`), or the body is invalid.",
        503 => "The database or the password hasher is saturated (`service_unavailable`); retry after `Retry-After` seconds.",
    }
    pub SetCurrentOrgErrors: [AUTHENTICATED, JSON_BODY] {
        404 => "No such organization, or the caller is not a member of it (`not_found`).",
    }
}

#[OpenApi(tag = "ApiTags::Auth")]
impl MeApi {
    /// The signed-in user
    ///
    /// The user and every organization they belong to, with their role.
    #[oai(path = "/v1/auth/me", method = "get", operation_id = "get_me")]
    async fn me(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
    ) -> Result<MeResponse, Problems<MeErrors>> {
        let me = state
            .as_user(auth.principal(), Access::ReadOnly, async |tx| {
                load_me(tx).await
            })
            .await?;
        Ok(MeResponse::Ok(Json(me)))
    }

    /// Update the signed-in user
    ///
    /// Changes the display name; absent fields stay as they are.
    #[oai(path = "/v1/auth/me", method = "patch", operation_id = "update_me")]
    async fn update_me(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        body: ValidJson<UpdateMe>,
    ) -> Result<MeResponse, Problems<UpdateMeErrors>> {
        let name = body.name.as_deref();
        let me = state
            .as_user(auth.principal(), Access::ReadWrite, async |tx| {
                if let Some(name) = name {
                    tx.execute(
                        "update app.users set name = $1 where id = app.current_user_id()",
                        &[&name],
                    )
                    .await?;
                }
                load_me(tx).await
            })
            .await?;
        Ok(MeResponse::Ok(Json(me)))
    }

    /// Change password
    ///
    /// Needs the current password. Every other session of the user is revoked; this one
    /// stays signed in.
    #[oai(
        path = "/v1/auth/me/password",
        method = "post",
        operation_id = "change_password"
    )]
    async fn change_password(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        body: ValidJson<ChangePassword>,
    ) -> Result<NoContentResponse, Problems<ChangePasswordErrors>> {
        check_new_password("new_password", &body.new_password)?;
        let current: Option<String> = state
            .as_user(auth.principal(), Access::ReadOnly, async |tx| {
                Ok(tx
                    .query_one("select app.current_password_hash()", &[])
                    .await?
                    .get(0))
            })
            .await?;
        let ok = state
            .passwords
            .verify(
                SecretString::from(body.current_password.as_str().to_owned()),
                current,
            )
            .await
            .map_err(ApiError::from)?;
        if !ok {
            return Err(ApiError::forbidden("the current password is incorrect")
                .with_code("invalid_current_password")
                .into());
        }
        let hash = state
            .passwords
            .hash(SecretString::from(body.new_password.as_str().to_owned()))
            .await
            .map_err(ApiError::from)?;
        state
            .as_user(auth.principal(), Access::ReadWrite, async |tx| {
                tx.execute("select app.change_password($1)", &[&hash])
                    .await?;
                Ok(())
            })
            .await?;
        Ok(NoContentResponse::NoContent)
    }

    /// Switch my current organization
    ///
    /// The organization the user works in by default (`current_org_id` in
    /// `GET /v1/auth/me`). The caller must be a member of it.
    #[oai(
        path = "/v1/auth/me/current-org",
        method = "put",
        operation_id = "set_current_org"
    )]
    async fn set_current_org(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        body: ValidJson<SetCurrentOrganization>,
    ) -> Result<SetCurrentOrgResponse, Problems<SetCurrentOrgErrors>> {
        let org = state
            .as_user(auth.principal(), Access::ReadWrite, async |tx| {
                tx.execute("select app.set_current_org($1)", &[&body.org_id])
                    .await?;
                load_org(tx, body.org_id).await
            })
            .await?;
        Ok(SetCurrentOrgResponse::Ok(Json(org)))
    }
}
