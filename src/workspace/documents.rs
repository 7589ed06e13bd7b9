//! Document processing (a worker step): leases uploaded documents, reads each object,
//! checks its SHA-256, extracts its text and stores it in chunks for search
//! (`app.document_chunks`, a `tsvector` each) -- or marks it `failed` with a reason a
//! user can act on. Runs on the jobs pool through `app.claim_documents` and
//! `app.finish_document`; any replica may run it (claims skip locked rows, and a lease
//! left by a stopped worker is taken over after 10 minutes).

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    db::{Access, DbError, Lane},
    state::State,
    storage::{ObjectKey, ObjectStore, StorageError},
};

/// Documents leased per worker pass.
pub const BATCH: i32 = 4;
/// Target size of a chunk of extracted text, in characters.
pub const CHUNK_CHARS: usize = 2000;

/// The media types whose text is extracted.
pub const SUPPORTED: &str = "text/plain, text/markdown, text/csv (any text/*), text/html and \
     application/json";

/// Extracts the searchable text of a document, or says why it cannot.
pub fn extract(content_type: &str, body: &[u8]) -> Result<String, String> {
    let essence = content_type
        .parse::<mime::Mime>()
        .map(|m| m.essence_str().to_ascii_lowercase())
        .unwrap_or_default();
    let text = || {
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        std::str::from_utf8(body).map(str::to_owned).map_err(|e| {
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.valid_up_to()
            )
        })
    };
    let extracted = match essence.as_str() {
        "text/html" | "application/xhtml+xml" => html_to_text(&text()?),
        "application/json" => json_to_text(body)?,
        e if e.ends_with("+json") => json_to_text(body)?,
        e if e.starts_with("text/") => text()?,
        "" => {
            return Err(format!(
                "unknown media type {content_type:?}; supported: {SUPPORTED}"
            ));
        }
        e => {
            return Err(format!(
                "text extraction from {e} is not supported; supported: {SUPPORTED}"
            ));
        }
    };
    // PostgreSQL text holds no NUL.
    Ok(extracted.replace('\0', ""))
}

/// The strings of a JSON document (keys and string values, numbers and booleans as
/// written), one per line, in document order.
fn json_to_text(body: &[u8]) -> Result<String, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not valid JSON ({e})"))?;
    fn walk(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Null => {}
            serde_json::Value::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    out.push_str(k);
                    out.push('\n');
                    walk(v, out);
                }
            }
            other => {
                out.push_str(&other.to_string());
                out.push('\n');
            }
        }
    }
    let mut out = String::new();
    walk(&value, &mut out);
    Ok(out)
}

/// The text of an HTML document: tags, comments, `<script>` and `<style>` removed,
/// block elements as line breaks, the common entities decoded.
pub fn html_to_text(html: &str) -> String {
    const BLOCKS: &[&str] = &[
        "p",
        "div",
        "br",
        "li",
        "tr",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "section",
        "article",
        "header",
        "footer",
        "pre",
        "blockquote",
        "table",
        "ul",
        "ol",
        "title",
    ];
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        out.push_str(&decode_entities(&rest[..lt]));
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |end| &after[end + 3..]);
            continue;
        }
        let Some(gt) = rest.find('>') else {
            rest = "";
            break;
        };
        let tag = &rest[1..gt];
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        rest = &rest[gt + 1..];
        if !tag.starts_with('/') && (name == "script" || name == "style") {
            // Skip to the element's end tag (case-insensitively).
            let close = format!("</{name}");
            let lower = rest.to_ascii_lowercase();
            rest = lower
                .find(&close)
                .and_then(|i| rest[i..].find('>').map(|j| &rest[i + j + 1..]))
                .unwrap_or("");
            continue;
        }
        if BLOCKS.contains(&name.as_str()) && !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out.push_str(&decode_entities(rest));
    // Collapse runs of blank space left by the markup.
    let lines: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect();
    lines.join("\n")
}

fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let end = rest[1..].find(';').map(|i| i + 1).filter(|&i| i <= 10);
        let decoded = end.and_then(|end| {
            let name = &rest[1..end];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some(' '),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Splits text into chunks of about `CHUNK_CHARS` characters, at a paragraph, line or
/// word boundary when one is near the end; blank chunks are dropped.
pub fn chunk(text: &str) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((limit, _)) = rest.char_indices().nth(CHUNK_CHARS) else {
            chunks.push(rest.to_owned());
            break;
        };
        let window = &rest[..limit];
        let floor = limit / 2;
        let cut = ["\n\n", "\n", " "]
            .iter()
            .find_map(|sep| window.rfind(sep).filter(|&i| i >= floor))
            .unwrap_or(limit);
        let piece = rest[..cut].trim();
        if !piece.is_empty() {
            chunks.push(piece.to_owned());
        }
        rest = rest[cut..].trim_start();
    }
    chunks
}

/// One worker pass: processes up to `BATCH` documents. Returns how many were finished.
pub async fn process_documents(state: &State) -> Result<usize, DbError> {
    let tx = state.db.begin_on(Lane::Jobs, Access::ReadWrite).await?;
    let claimed = tx
        .query(
            "select id, object_key, content_type, bytes, sha256 from app.claim_documents($1)",
            &[&BATCH],
        )
        .await;
    let claimed = tx.finish(claimed).await?;
    let mut finished = 0;
    for row in &claimed {
        let (id, key, content_type, bytes, sha256): (Uuid, String, String, i64, Vec<u8>) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        let outcome = match ObjectKey::from_stored(&key) {
            Ok(key) => match state.storage.get(&key).await {
                Ok(body) => {
                    let digest = Sha256::digest(&body);
                    if body.len() as i64 != bytes || digest[..] != sha256[..] {
                        tracing::error!(%id, key = %key, "document object fails its checksum");
                        Err("the stored file fails its checksum".to_owned())
                    } else {
                        let content_type = content_type.clone();
                        tokio::task::spawn_blocking(move || {
                            extract(&content_type, &body).map(|text| {
                                let bytes = text.len() as i64;
                                (chunk(&text), bytes)
                            })
                        })
                        .await
                        .unwrap_or_else(|e| Err(format!("extraction failed ({e})")))
                    }
                }
                Err(StorageError::NotFound(_)) => {
                    tracing::error!(%id, key = %key, "document object of a committed row is missing");
                    Err("the stored file is missing".to_owned())
                }
                Err(e) => {
                    // The store is away: the lease expires and a later pass retries.
                    tracing::warn!(%id, error = %e, "document processing: object store failed");
                    continue;
                }
            },
            Err(e) => Err(e.to_string()),
        };
        let (error, chunks, text_bytes) = match outcome {
            Ok((chunks, text_bytes)) => (None, chunks, Some(text_bytes)),
            Err(reason) => (Some(reason), Vec::new(), None),
        };
        let tx = state.db.begin_on(Lane::Jobs, Access::ReadWrite).await?;
        let done = tx
            .execute(
                "select app.finish_document($1, $2, $3, $4)",
                &[&id, &error, &chunks, &text_bytes],
            )
            .await;
        tx.finish(done).await?;
        finished += 1;
    }
    Ok(finished)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_text_by_media_type() {
        assert_eq!(
            extract("text/plain", b"\xEF\xBB\xBFhello").unwrap(),
            "hello"
        );
        assert_eq!(
            extract("text/markdown; charset=utf-8", b"# T\n").unwrap(),
            "# T\n"
        );
        assert!(
            extract("text/plain", b"\xff\xfe")
                .unwrap_err()
                .contains("UTF-8")
        );
        assert_eq!(
            extract("application/json", br#"{"a": ["x", 1, null, {"b": true}]}"#).unwrap(),
            "a\nx\n1\nb\ntrue\n"
        );
        assert!(
            extract("application/json", b"{")
                .unwrap_err()
                .contains("JSON")
        );
        assert!(
            extract("image/png", b"\x89PNG")
                .unwrap_err()
                .contains("image/png is not supported")
        );
        assert_eq!(extract("text/plain", b"a\0b").unwrap(), "ab");
    }

    #[test]
    fn html_keeps_text_and_drops_markup() {
        let html = "<html><head><title>T</title><style>p{}</style>\
                    <script>alert('<p>x</p>')</script></head>\
                    <body><!-- no --><h1>Hi &amp; bye</h1><p>one&nbsp;two &#65;&#x42; &bogus;</p>\
                    <SCRIPT>x()</SCRIPT>end</body></html>";
        assert_eq!(html_to_text(html), "T\nHi & bye\none two AB &bogus;\nend");
    }

    #[test]
    fn chunks_break_at_boundaries_and_lose_nothing() {
        assert!(chunk("  ").is_empty());
        assert_eq!(chunk("short"), vec!["short"]);
        let para = "word ".repeat(300); // 1,500 characters
        let text = format!("{para}\n\n{para}\n\n{para}");
        let chunks = chunk(&text);
        assert_eq!(
            chunks.len(),
            3,
            "{:?}",
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>()
        );
        assert!(chunks.iter().all(|c| c.chars().count() <= CHUNK_CHARS));
        let words = |s: &str| s.split_whitespace().count();
        assert_eq!(chunks.iter().map(|c| words(c)).sum::<usize>(), words(&text));
        // No boundary at all: cut at the limit.
        let solid = "x".repeat(CHUNK_CHARS * 2 + 5);
        assert_eq!(
            chunk(&solid).iter().map(|c| c.len()).collect::<Vec<_>>(),
            vec![CHUNK_CHARS, CHUNK_CHARS, 5]
        );
    }
}
