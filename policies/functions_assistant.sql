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

revoke all on function app.assistant_admit(uuid), app.assistant_record_usage(uuid, bigint, bigint) from public;
grant execute on function app.assistant_admit(uuid), app.assistant_record_usage(uuid, bigint, bigint)
    to palisade_runtime;

comment on function app.assistant_admit(uuid) is
    'Before the model is called: 402 plan_limit_reached (no llm_tokens left) or budget_exhausted (the conversation reached max_budget_per_task); returns the tokens left, NULL for unlimited. Context only.';
comment on function app.assistant_record_usage(uuid, bigint, bigint) is
    'Meters an answer''s tokens (llm_tokens rollups of the period and the day, notices) for a conversation the principal in context started.';
