-- functions_assistant: the assistant's admission and metering. Both act on the org and
-- principal of the verified context only (no org, user or key argument), and on a
-- conversation only when that principal started it.
--
--   app.assistant_admit(conversation)   before the model is called: refuses (402) when the
--       org has no LLM tokens left this period (plan_limit_reached, meter llm_tokens) or
--       the conversation has spent the org's max_budget_per_task (budget_exhausted);
--       returns the tokens left (NULL: unlimited).
--   app.assistant_record_usage(conversation, prompt, completion)   after the answer (whole
--       or partial): adds the tokens to the llm_tokens rollups of the period and the day,
--       with the 80 % / 100 % notices, in the transaction that stores the answer.
--   app.search_chunks(question, documents, wanted)   retrieval's candidates: the keys of
--       the org's chunks that hold the question's rarest words (below). The route ranks
--       them under its own policies (assistant::RETRIEVE_SQL).

create or replace function app.assistant_admit(p_conversation uuid) returns bigint
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_org uuid := app.current_org_id();
    v_plan text;
    v_limit bigint;
    v_used bigint;
    v_budget numeric;
    v_cost numeric;
begin
    if v_org is null then
        perform app.refuse(404, 'not_found', 'organization not found');
    end if;
    if p_conversation is not null then
        select c.cost into v_cost from app.assistant_conversations c
         where c.id = p_conversation and c.org_id = v_org
           and (c.created_by = app.current_user_id() or c.created_by_key = app.current_api_key_id());
        if not found then
            perform app.refuse(404, 'not_found', 'conversation not found');
        end if;
        select s.max_budget_per_task into v_budget from app.org_settings s where s.org_id = v_org;
        if v_budget is not null and v_cost >= v_budget then
            raise exception using errcode = 'PT402', hint = 'budget_exhausted',
                message = pg_catalog.format(
                    'this conversation has spent %s USD of its budget (max_budget_per_task %s USD); start a new one',
                    pg_catalog.round(v_cost, 4), v_budget);
        end if;
    end if;
    select l.plan_id, l.included into v_plan, v_limit from app.org_limit(v_org, 'llm_tokens') l;
    if v_limit is null then
        return null;
    end if;
    v_used := app.quota_used(v_org, 'llm_tokens');
    if v_used >= v_limit then
        perform app.refuse_plan_limit('llm_tokens', v_plan, v_limit, v_used);
    end if;
    return v_limit - v_used;
end
$$;

create or replace function app.assistant_record_usage(
    p_conversation uuid, p_prompt_tokens bigint, p_completion_tokens bigint) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_org uuid := app.current_org_id();
    v_tokens bigint := coalesce(p_prompt_tokens, 0) + coalesce(p_completion_tokens, 0);
    v_period date := app.period_of(now());
    v_day date := (now() at time zone 'UTC')::date;
    v_total numeric;
    v_limit bigint;
begin
    if coalesce(p_prompt_tokens, 0) < 0 or coalesce(p_completion_tokens, 0) < 0 then
        perform app.refuse(422, 'validation_failed', 'token counts cannot be negative');
    end if;
    if not exists (select 1 from app.assistant_conversations c
                    where c.id = p_conversation and c.org_id = v_org
                      and (c.created_by = app.current_user_id()
                           or c.created_by_key = app.current_api_key_id())) then
        perform app.refuse(404, 'not_found', 'conversation not found');
    end if;
    if v_tokens = 0 then
        return;
    end if;
    insert into app.usage_periods as u (org_id, meter_key, period, aggregation, value, events)
    values (v_org, 'llm_tokens', v_period, 'sum', v_tokens, 1)
    on conflict (org_id, meter_key, period) do update set
        value = u.value + excluded.value, events = u.events + 1, updated_at = now()
    returning u.value into v_total;
    insert into app.usage_days as u (org_id, meter_key, day, aggregation, value, events)
    values (v_org, 'llm_tokens', v_day, 'sum', v_tokens, 1)
    on conflict (org_id, meter_key, day) do update set
        value = u.value + excluded.value, events = u.events + 1, updated_at = now();
    select l.included into v_limit from app.org_limit(v_org, 'llm_tokens') l;
    perform app.note_usage(v_org, 'llm_tokens', v_period, v_total, v_limit);
end
$$;

-- Which of the org's chunks retrieval ranks. A question's common words are in nearly every
-- chunk ("the", "how"; in a technical corpus "data", "version"), so ranking every chunk
-- that holds any word of the question ranks them all -- 10,000 chunks, ~27 ms -- and the
-- runtime role cannot use the search index (`@@` is not leakproof, so under its policies
-- it is never an index condition). Instead, with each word's count of chunks in the org
-- (app.search_terms, kept by a trigger), rarest first:
--   1. the chunks holding ANY of the rarest words, as many words as fit together in
--      v_budget chunks (usually the words that tell the question apart); else, when even
--      the rarest word is in more than v_budget chunks,
--   2. the chunks holding ALL of the m rarest words, m the fewest whose expected matches
--      (independent words) fit in v_budget; fewer than p_wanted found, m - 1, ... down to
--      the rarest word alone, of which the first v_budget chunks (index order).
-- Each is one scan of document_chunks_org_search_idx, whose keys are "<org id> <word>": the
-- org's postings of each word, as long as its count. With p_documents, the chunks of those documents instead (no word
-- needed; the caller ranks them). Chunks of documents in a restricted project the caller
-- cannot see are left out here too, though the caller's own policies would drop them:
-- the keys alone say which hidden chunks hold which words. The org is the verified
-- context's (none: no rows); words are the question's lexemes in the org's search
-- language and as written ('simple'), as chunks are indexed.
create or replace function app.search_chunks(p_question text, p_documents uuid[], p_wanted integer)
returns table (document_id uuid, chunk_no integer)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
rows 250
as $$
declare
    v_budget constant integer := 250;
    v_org uuid := (app.verified_context()).org_id;
    v_hidden uuid[];
    v_words text[];
    v_counts integer[];
    v_total integer;
    v_query tsquery;
    v_n integer := 0;
    v_sum bigint := 0;
    v_expected float8;
    v_documents uuid[];
    v_chunks integer[];
begin
    if v_org is null then
        return;
    end if;
    v_hidden := app.hidden_projects();
    if p_documents is not null then
        return query
        select c.document_id, c.chunk_no
          from app.document_chunks c
          join app.documents d on d.id = c.document_id
         where c.document_id = any (p_documents) and c.org_id = v_org and d.org_id = v_org
           and (d.project_id is null or not (d.project_id = any (v_hidden)));
        return;
    end if;
    select array_agg(t.lexeme order by t.chunks, t.lexeme), array_agg(t.chunks order by t.chunks, t.lexeme)
      into v_words, v_counts
      from (select distinct w.lexeme
              from unnest(tsvector_to_array(
                       to_tsvector(coalesce((select s.search_language from app.org_settings s
                                              where s.org_id = v_org), 'simple'::regconfig), p_question)
                       || to_tsvector('simple'::regconfig, p_question))) w(lexeme)) q
      join app.search_terms t on t.org_id = v_org and t.lexeme = q.lexeme
     -- As the index keys them (app.chunk_search_key): longer lexemes are not in it.
     where t.lexeme <> '' and octet_length(t.lexeme) <= 2000;
    if v_words is null then
        return;  -- no word of the question is in any chunk
    end if;
    while v_n < cardinality(v_words) and v_sum + v_counts[v_n + 1] <= v_budget loop
        v_n := v_n + 1;
        v_sum := v_sum + v_counts[v_n];
    end loop;
    if v_n = 0 then
        select t.chunks into v_total from app.search_terms t where t.org_id = v_org and t.lexeme = '';
        v_n := 1;
        v_expected := v_counts[1];
        while v_expected > v_budget and v_n < cardinality(v_words) loop
            v_n := v_n + 1;
            v_expected := v_expected * v_counts[v_n] / greatest(v_total, 1);
        end loop;
    end if;
    loop
        -- The words keyed as the index keys them.
        v_query := app.search_words_query(
            tsvector_to_array(app.chunk_search_key(v_org, array_to_tsvector(v_words[1:v_n]))), v_sum = 0);
        -- Planned for these words (EXECUTE): a plan cached for any words could read the
        -- table in order to find v_budget rows rather than the org's postings.
        execute 'select array_agg(f.document_id), array_agg(f.chunk_no)
                   from (select c.document_id, c.chunk_no
                           from app.document_chunks c
                          where app.chunk_search_key(c.org_id, c.search) @@ $1
                            and (cardinality($2) = 0
                                 or not exists (select 1 from app.documents d
                                                 where d.id = c.document_id and d.project_id = any ($2)))
                          limit $3) f'
           into v_documents, v_chunks
          using v_query, v_hidden, v_budget;
        exit when v_sum > 0 or v_n = 1 or coalesce(cardinality(v_documents), 0) >= p_wanted;
        v_n := v_n - 1;
    end loop;
    return query select u.document_id, u.chunk_no from unnest(v_documents, v_chunks) u(document_id, chunk_no);
end
$$;

-- The tsquery of lexemes taken as they are (no parsing, no stemming): all of them (p_all)
-- or any.
create or replace function app.search_words_query(p_words text[], p_all boolean) returns tsquery
language sql immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select string_agg('''' || replace(replace(w, '\', '\\'), '''', '''''') || '''',
                      case when p_all then ' & ' else ' | ' end)::tsquery
      from unnest(p_words) w
$$;

revoke all on function app.search_chunks(text, uuid[], integer), app.search_words_query(text[], boolean)
    from public;
grant execute on function app.search_chunks(text, uuid[], integer) to palisade_runtime;

revoke all on function app.assistant_admit(uuid), app.assistant_record_usage(uuid, bigint, bigint) from public;
grant execute on function app.assistant_admit(uuid), app.assistant_record_usage(uuid, bigint, bigint)
    to palisade_runtime;

comment on function app.assistant_admit(uuid) is
    'Before the model is called: 402 plan_limit_reached (no llm_tokens left) or budget_exhausted (the conversation reached max_budget_per_task); returns the tokens left, NULL for unlimited. Context only.';
comment on function app.assistant_record_usage(uuid, bigint, bigint) is
    'Meters an answer''s tokens (llm_tokens rollups of the period and the day, notices) for a conversation the principal in context started.';
comment on function app.search_chunks(text, uuid[], integer) is
    'Retrieval''s candidates: keys of the org''s chunks holding the question''s rarest words (or of p_documents), visible to the caller. Context only.';
comment on function app.search_words_query(text[], boolean) is
    'A tsquery of the lexemes as given, all (true) or any (false). Internal to app.search_chunks.';
