//! The outbox sender speaks real SMTP: to a minimal SMTP server run by the test.

use std::sync::{Arc, Mutex};

use palisade::email::sender::{Mailer, deliver_batch};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};

use crate::helpers::{PASSWORD, limits, settings, spawn_app_with};

/// Accepts SMTP sessions on loopback; stores each message's DATA. With `reject`, every
/// recipient is refused with 550.
async fn smtp_server(reject: bool) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let messages = Arc::new(Mutex::new(Vec::new()));
    let store = messages.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 test-smtp ESMTP\r\n").await.unwrap();
                while let Ok(Some(line)) = lines.next_line().await {
                    let verb = line
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250 test-smtp\r\n",
                        "RCPT" if reject => b"550 5.1.1 no such mailbox\r\n",
                        "DATA" => {
                            write
                                .write_all(b"354 end with <CRLF>.<CRLF>\r\n")
                                .await
                                .unwrap();
                            let mut data = String::new();
                            while let Ok(Some(l)) = lines.next_line().await {
                                if l == "." {
                                    break;
                                }
                                data.push_str(&l);
                                data.push('\n');
                            }
                            store.lock().unwrap().push(data);
                            b"250 2.0.0 queued\r\n"
                        }
                        "QUIT" => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        _ => b"250 OK\r\n",
                    };
                    if write.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, messages)
}

#[tokio::test]
async fn outbox_is_delivered_over_smtp_and_wiped() {
    let (port, received) = smtp_server(false).await;
    let mut s = settings();
    s.smtp_url = Some(format!("smtp://127.0.0.1:{port}").into());
    s.smtp_from = "Palisade <no-reply@example.com>".into();
    let app = spawn_app_with(s.clone(), limits()).await;
    app.register("mail@example.com", PASSWORD, "Mail")
        .await
        .assert_status(201);
    let token = app
        .last_email("mail@example.com", "verify_email")
        .await
        .token();

    let mailer = Mailer::from_settings(&s).unwrap();
    let sent = deliver_batch(&app.state.db, &app.state.outbox, &mailer)
        .await
        .unwrap();
    assert_eq!(sent, 1);
    let messages = received.lock().unwrap().clone();
    assert_eq!(messages.len(), 1);
    assert!(
        messages[0].contains("Subject: Confirm your email address"),
        "{}",
        messages[0]
    );
    assert!(
        messages[0].contains("To: mail@example.com"),
        "{}",
        messages[0]
    );
    assert!(
        messages[0].replace("=\n", "").contains(&token),
        "the link carries the token"
    );

    // Sent once: the row is marked, its sealed body dropped, and nothing is due anymore.
    let db = app.sql_superuser().await;
    let row = db
        .query_one(
            "select sent_at is not null, length(body_sealed) from app.email_outbox",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert_eq!(row.get::<_, i32>(1), 0);
    assert_eq!(
        deliver_batch(&app.state.db, &app.state.outbox, &mailer)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn refused_delivery_is_retried_later_with_the_error_kept() {
    let (port, received) = smtp_server(true).await;
    let mut s = settings();
    s.smtp_url = Some(format!("smtp://127.0.0.1:{port}").into());
    let app = spawn_app_with(s.clone(), limits()).await;
    app.register("bounce@example.com", PASSWORD, "Bounce")
        .await
        .assert_status(201);
    let mailer = Mailer::from_settings(&s).unwrap();
    assert_eq!(
        deliver_batch(&app.state.db, &app.state.outbox, &mailer)
            .await
            .unwrap(),
        0
    );
    assert!(received.lock().unwrap().is_empty());
    let db = app.sql_superuser().await;
    let row = db
        .query_one(
            "select sent_at is null, attempts, last_error, next_attempt_at > now(), length(body_sealed) > 0
               from app.email_outbox",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "not marked sent");
    assert_eq!(row.get::<_, i32>(1), 1);
    assert!(
        row.get::<_, String>(2).contains("550"),
        "{:?}",
        row.get::<_, String>(2)
    );
    assert!(row.get::<_, bool>(3), "backed off");
    assert!(row.get::<_, bool>(4), "the body is kept for the retry");
    // Not due again yet.
    assert_eq!(
        deliver_batch(&app.state.db, &app.state.outbox, &mailer)
            .await
            .unwrap(),
        0
    );
    let attempts: i32 = db
        .query_one("select attempts from app.email_outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, 1);
}
