//! Delivers committed outbox rows, on the worker's pool. Several replicas may run it:
//! rows are claimed with `for update skip locked` and leased, so each email goes out once.

use std::time::Duration;

use anyhow::Context;
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
};
use secrecy::ExposeSecret;

use crate::{
    config::{Environment, Settings},
    crypto::Sealer,
    db::{Access, Db, Lane},
};

/// Where emails go.
#[derive(Clone)]
pub enum Mailer {
    /// No SMTP configured: log each email. In development the body (with its link) is
    /// logged so the flow can be followed locally; in production only the envelope.
    Log { include_body: bool },
    /// Delivery over SMTP (`SMTP_URL`), with STARTTLS/TLS as the URL says.
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
    },
}

impl Mailer {
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        match &settings.smtp_url {
            None => Ok(Mailer::Log {
                include_body: settings.environment == Environment::Development,
            }),
            Some(url) => Ok(Mailer::Smtp {
                transport: AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
                    .map_err(|_| {
                        anyhow::anyhow!("SMTP_URL is not a valid smtp:// or smtps:// URL")
                    })?
                    .timeout(Some(Duration::from_secs(20)))
                    .build(),
                from: settings.smtp_from.parse().context(
                    "SMTP_FROM is not a valid mailbox (e.g. `Palisade <no-reply@example.com>`)",
                )?,
            }),
        }
    }

    async fn deliver(&self, to: &str, subject: &str, body: &str) -> Result<(), String> {
        match self {
            Mailer::Smtp { transport, from } => {
                let message = Message::builder()
                    .from(from.clone())
                    .to(to
                        .parse::<Mailbox>()
                        .map_err(|e| format!("bad recipient: {e}"))?)
                    .subject(subject)
                    .header(ContentType::TEXT_PLAIN)
                    .body(body.to_owned())
                    .map_err(|e| e.to_string())?;
                transport
                    .send(message)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            // One line per email: the body's line breaks are escaped (`?body`), and its
            // link, if any, is its own field, easy to copy.
            Mailer::Log { include_body: true } => {
                let link = body
                    .split_whitespace()
                    .find(|w| w.starts_with("http://") || w.starts_with("https://"))
                    .unwrap_or("");
                tracing::info!(%to, %subject, %link, ?body, "email (no SMTP_URL set; logged instead of sent)");
                Ok(())
            }
            Mailer::Log {
                include_body: false,
            } => {
                tracing::warn!(%to, %subject, "email not delivered: SMTP_URL is not set");
                Ok(())
            }
        }
    }
}

/// Delivers one batch; returns how many were sent.
pub async fn deliver_batch(
    db: &Db,
    sealer: &Sealer,
    mailer: &Mailer,
) -> Result<usize, crate::db::DbError> {
    let tx = db.begin_on(Lane::Jobs, Access::ReadWrite).await?;
    let claimed = tx
        .query("select id, to_email, subject, body_sealed from app.claim_emails(20, interval '60 seconds')", &[])
        .await;
    let rows = tx.finish(claimed).await?;
    let mut sent = 0;
    for row in rows {
        let id: uuid::Uuid = row.get(0);
        let to: String = row.get(1);
        let subject: String = row.get(2);
        let sealed: Vec<u8> = row.get(3);
        let outcome = match sealer.open(&sealed) {
            Ok(body) => mailer.deliver(&to, &subject, &body).await,
            Err(e) => Err(e.to_string()),
        };
        let tx = db.begin_on(Lane::Jobs, Access::ReadWrite).await?;
        let marked = match &outcome {
            Ok(()) => tx.execute("select app.mark_email_sent($1)", &[&id]).await,
            Err(e) => {
                tracing::warn!(email_id = %id, error = %e, "email delivery failed; will retry");
                tx.execute("select app.mark_email_failed($1, $2)", &[&id, e])
                    .await
            }
        };
        tx.finish(marked).await?;
        sent += usize::from(outcome.is_ok());
    }
    Ok(sent)
}
