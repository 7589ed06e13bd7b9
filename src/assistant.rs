//! The assistant's work that is not HTTP: which model and key a turn uses, retrieval of
//! the org's document chunks under the caller's own row-level security, the prompt, and
//! what a turn costs. The route (`api/workspace/assistant.rs`) streams; the model is
//! called through `llm`.

use secrecy::SecretString;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::{
    config::LlmSettings,
    db::Tx,
    http::problem::ApiError,
    llm::{Endpoint, Message},
    secrets::{self, MasterKeys, SecretSlot},
};

/// Chunks retrieved per turn.
pub const RETRIEVED_CHUNKS: i64 = 5;
/// Earlier messages of the conversation sent with a turn.
pub const HISTORY_MESSAGES: i64 = 20;
/// Characters of an earlier message sent with a turn.
const HISTORY_CHARS: usize = 4000;

/// One retrieved chunk: what the model was shown and the answer cites.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Retrieved {
    pub document_id: Uuid,
    pub chunk_no: i32,
    pub title: String,
    pub rank: f32,
    #[serde(skip)]
    pub content: String,
}

/// The chunks of the org's ready documents that best match `question`, ranked, visible
/// to the caller: the statement runs under the caller's policies (documents of a
/// restricted project the caller is not in, and every other org's, do not exist for it).
/// Matches any word of the question, stemmed with the org's search language, or as
/// written (chunks indexed under the `simple` configuration); `documents` narrows the
/// search to those documents.
///
/// Ranked: the candidates of `app.search_chunks` (policies/functions_assistant.sql) --
/// at most 250 chunks holding the question's rarest words in the org (or every chunk of
/// `documents`), found by a definer through the search index, which `@@` (not
/// leakproof) keeps from ever serving the runtime role -- each read by its primary key
/// under the caller's own policies, tested and ranked with a query built once
/// (`materialized`). Only the best `$3` are joined to their documents. Chunks exist only
/// for ready documents (app.finish_document); the status is still checked on the ones
/// returned. `ts_rank` (term frequency) rather than `ts_rank_cd` (cover density): a
/// question is matched word by word, and cover density costs about six times as much
/// per chunk (benches/README-performance.md, issue 15).
pub const RETRIEVE_SQL: &str = "
    with q as materialized (
        select (replace(plainto_tsquery(s.search_language, $1)::text, ' & ', ' | ')::tsquery
                || replace(plainto_tsquery('simple', $1)::text, ' & ', ' | ')::tsquery) as query
          from app.org_settings s
    ), ranked as (
        select c.document_id, c.chunk_no, ts_rank(c.search, q.query)::float4 as rank, c.content
          from q
         cross join app.search_chunks($1, $2::uuid[], $3::bigint::integer) k
          join app.document_chunks c on c.document_id = k.document_id and c.chunk_no = k.chunk_no
         where c.search @@ q.query
         order by 3 desc, c.document_id, c.chunk_no
         limit $3
    )
    select r.document_id, r.chunk_no, d.title, r.rank, r.content
      from ranked r
      join app.documents d on d.id = r.document_id and d.status = 'ready'
     order by r.rank desc, r.document_id, r.chunk_no";

pub fn retrieved(row: &Row) -> Retrieved {
    Retrieved {
        document_id: row.get(0),
        chunk_no: row.get(1),
        title: row.get(2),
        rank: row.get(3),
        content: row.get(4),
    }
}

/// An org's assistant settings, as a turn needs them.
#[derive(Debug, Clone)]
pub struct OrgModel {
    pub base_url: Option<String>,
    pub model: Option<String>,
    pub input_price_per_mtok: f64,
    pub output_price_per_mtok: f64,
    pub billing_margin: f64,
    pub max_budget_per_task: Option<f64>,
}

pub const ORG_MODEL_SQL: &str = "select llm_base_url, llm_model, llm_input_price_per_mtok::float8,
        llm_output_price_per_mtok::float8, billing_margin::float8, max_budget_per_task::float8
   from app.org_settings";

impl From<&Row> for OrgModel {
    fn from(r: &Row) -> Self {
        Self {
            base_url: r.get(0),
            model: r.get(1),
            input_price_per_mtok: r.get(2),
            output_price_per_mtok: r.get(3),
            billing_margin: r.get(4),
            max_budget_per_task: r.get(5),
        }
    }
}

impl OrgModel {
    /// US dollars for a turn's tokens, margin included.
    pub fn cost(&self, prompt_tokens: i64, completion_tokens: i64) -> f64 {
        let base = (prompt_tokens as f64 * self.input_price_per_mtok
            + completion_tokens as f64 * self.output_price_per_mtok)
            / 1_000_000.0;
        base * (1.0 + self.billing_margin)
    }

    /// The most output tokens `budget_left` dollars pay for (None: no price, no cap).
    pub fn tokens_for(&self, budget_left: f64) -> Option<u32> {
        let per_token = self.output_price_per_mtok * (1.0 + self.billing_margin) / 1_000_000.0;
        (per_token > 0.0).then(|| {
            (budget_left / per_token)
                .floor()
                .clamp(1.0, u32::MAX as f64) as u32
        })
    }
}

/// The endpoint a turn calls and whose key it sends:
/// - the org's `llm_base_url`, with the caller's own LLM key, else the org's -- never the
///   server's key, which goes only to the server's own endpoint;
/// - else the server's `LLM_BASE_URL`, with the caller's key, else the org's, else
///   `LLM_API_KEY`.
///
/// Neither configured: 409 `assistant_not_configured`. The flag says whether the endpoint
/// is the server's own (the operator's choice, reached on any network) rather than the
/// org's (refused on private networks unless the operator allows them).
pub async fn endpoint(
    tx: &Tx,
    keys: &MasterKeys,
    server: &LlmSettings,
    org_id: Uuid,
    user_id: Option<Uuid>,
    org: &OrgModel,
) -> Result<(Endpoint, bool), ApiError> {
    let slot = |user_id| SecretSlot {
        org_id,
        user_id,
        kind: "setting",
        name: "llm_api_key",
    };
    let mut key = match user_id {
        Some(u) => secrets::open(tx, keys, &slot(Some(u))).await?,
        None => None,
    };
    if key.is_none() {
        key = secrets::open(tx, keys, &slot(None)).await?;
    }
    let (base_url, api_key, servers) = match (&org.base_url, &server.base_url) {
        (Some(url), _) => (url.clone(), key.map(SecretString::from), false),
        (None, Some(url)) => (
            url.clone(),
            key.map(SecretString::from)
                .or_else(|| server.api_key.clone()),
            true,
        ),
        (None, None) => {
            return Err(ApiError::conflict(
                "assistant_not_configured",
                "no model is configured: set llm_base_url (and llm_api_key) in the \
                 organization's settings",
            ));
        }
    };
    let endpoint = Endpoint {
        base_url,
        api_key,
        model: org.model.clone().unwrap_or_else(|| server.model.clone()),
    };
    Ok((endpoint, servers))
}

/// The messages a turn sends: instructions with the retrieved context, the conversation
/// so far (oldest first), then the question.
pub fn prompt(context: &[Retrieved], history: &[(String, String)], question: &str) -> Vec<Message> {
    let mut system = String::from(
        "You are the assistant of this organization's workspace. Answer the question using \
         the numbered context passages from the organization's documents when they are \
         relevant, and cite them as [1], [2], ... If they do not contain the answer, say so.",
    );
    if context.is_empty() {
        system.push_str("\n\nNo passage of the organization's documents matched the question.");
    } else {
        system.push_str("\n\nContext:");
        for (i, c) in context.iter().enumerate() {
            system.push_str(&format!(
                "\n\n[{}] {} (part {})\n{}",
                i + 1,
                c.title,
                c.chunk_no,
                c.content
            ));
        }
    }
    let mut messages = vec![Message {
        role: "system".into(),
        content: system,
    }];
    for (role, content) in history {
        messages.push(Message {
            role: role.clone(),
            content: content.chars().take(HISTORY_CHARS).collect(),
        });
    }
    messages.push(Message {
        role: "user".into(),
        content: question.to_owned(),
    });
    messages
}

/// A token count for text the upstream did not count (it stopped before its usage
/// block): about four characters a token, as OpenAI's own rule of thumb.
pub fn estimate_tokens(text: &str) -> i64 {
    (text.chars().count() as i64 + 3) / 4
}

/// A conversation's title from its first question: its first line, at most 80 characters.
pub fn title_of(question: &str) -> String {
    let line = question.trim().lines().next().unwrap_or("").trim();
    let mut title: String = line.chars().take(80).collect();
    if title.is_empty() {
        title = "Conversation".into();
    }
    title
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(input: f64, output: f64, margin: f64) -> OrgModel {
        OrgModel {
            base_url: None,
            model: None,
            input_price_per_mtok: input,
            output_price_per_mtok: output,
            billing_margin: margin,
            max_budget_per_task: None,
        }
    }

    #[test]
    fn cost_counts_both_sides_and_the_margin() {
        let m = model(1.0, 4.0, 0.5);
        // (1000 * 1 + 500 * 4) / 1e6 * 1.5
        assert!((m.cost(1000, 500) - 0.0045).abs() < 1e-12);
        assert_eq!(model(0.0, 0.0, 0.0).cost(10, 10), 0.0);
    }

    #[test]
    fn a_budget_caps_the_output_tokens() {
        let m = model(0.0, 10.0, 0.0);
        assert_eq!(m.tokens_for(0.001), Some(100));
        assert_eq!(m.tokens_for(0.0), Some(1));
        assert_eq!(model(1.0, 0.0, 0.0).tokens_for(1.0), None);
    }

    #[test]
    fn the_prompt_numbers_its_context_and_keeps_the_order() {
        let c = Retrieved {
            document_id: Uuid::nil(),
            chunk_no: 2,
            title: "Handbook".into(),
            rank: 0.5,
            content: "Holidays are 25 days.".into(),
        };
        let m = prompt(
            &[c],
            &[
                ("user".into(), "hi".into()),
                ("assistant".into(), "hello".into()),
            ],
            "How many holidays?",
        );
        assert_eq!(m.len(), 4);
        assert!(
            m[0].content
                .contains("[1] Handbook (part 2)\nHolidays are 25 days.")
        );
        assert_eq!(m[3].content, "How many holidays?");
        assert_eq!(m[1].role, "user");
    }

    #[test]
    fn titles_and_estimates() {
        assert_eq!(title_of("  first line\nsecond"), "first line");
        assert_eq!(title_of("   "), "Conversation");
        assert_eq!(title_of(&"x".repeat(200)).len(), 80);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens(""), 0);
    }
}
