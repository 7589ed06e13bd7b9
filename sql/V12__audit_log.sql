-- V12: the audit log (issue 13). One append-only table, app.audit_log, holds every
-- change the API makes and every sign-in, each written in the transaction of what it
-- records. It replaces app.org_events (V4), whose rows are carried over below.
--
-- Rows belong to a chain: an organization's (org_id set) or, for what concerns one
-- account and no org (sign-ups, password and session changes), that account's
-- (account_id set). Within a chain, seq counts 1, 2, 3, ... and each row's hash is
-- SHA-256(prev_hash || canonical encoding of the row), prev_hash being the previous
-- row's hash (32 zero bytes for the first): editing, deleting or reordering any row
-- breaks every hash after it (app.verify_audit_chain() finds the first broken link).
--
-- The chain is built here, by a BEFORE INSERT trigger, because it is the data's format
-- rather than an access rule: seq, prev_hash, hash and occurred_at are always the
-- trigger's, whatever an insert says. Appends to one chain are serialized by a
-- transaction-level advisory lock, so concurrent writers in one org wait for each
-- other's commit and never fork the chain (the unique key refuses a fork anyway, e.g.
-- from a REPEATABLE READ snapshot that missed the newest row).
--
-- org_id has no foreign key on purpose: an org's log outlives the org for
-- AUDIT_RETENTION_DAYS (then the worker purges it), readable meanwhile only by a DBA.
-- Row-level security, the writers and the append-only guard: policies/audit_log.sql.

create table app.audit_log (
    chain_id    uuid        generated always as (coalesce(org_id, account_id)) stored,
    seq         bigint      not null,
    org_id      uuid,
    account_id  uuid,
    occurred_at timestamptz not null,
    -- The canonical encoding's version (app.audit_row_hash), part of the hash.
    version     smallint    not null default 1,
    actor_type  text        not null,
    actor_id    uuid,
    actor_name  text,
    action      text        not null,
    targets     jsonb       not null default '[]'::jsonb,
    context     jsonb       not null default '{}'::jsonb,
    metadata    jsonb       not null default '{}'::jsonb,
    prev_hash   bytea       not null,
    hash        bytea       not null,
    constraint audit_log_pkey primary key (chain_id, seq),
    constraint audit_log_one_chain check ((org_id is null) <> (account_id is null)),
    constraint audit_log_seq_check check (seq >= 1),
    constraint audit_log_version_check check (version = 1),
    constraint audit_log_actor_type_check check (actor_type in ('user', 'api_key', 'system')),
    constraint audit_log_actor_check check ((actor_type = 'system') = (actor_id is null)),
    constraint audit_log_actor_name_length check (char_length(actor_name) <= 320),
    constraint audit_log_action_format check (action ~ '^[a-z][a-z_]*(\.[a-z][a-z_]*)+$' and char_length(action) <= 80),
    constraint audit_log_targets_array check (jsonb_typeof(targets) = 'array'),
    constraint audit_log_context_object check (jsonb_typeof(context) = 'object'),
    constraint audit_log_metadata_object check (jsonb_typeof(metadata) = 'object'),
    constraint audit_log_hashes_sha256 check (octet_length(prev_hash) = 32 and octet_length(hash) = 32)
);
comment on table app.audit_log is
    'Append-only, hash-chained audit log per org (org_id) or account (account_id); written in the transaction of the change it records.';
comment on column app.audit_log.chain_id is 'The chain: the org''s id, or the account''s for account events.';
comment on column app.audit_log.hash is 'SHA-256(prev_hash || app.audit_row_hash encoding of the row).';

-- The canonical encoding: a JSON array of every column but the hashes and chain_id
-- (generated from org_id and account_id, which are in it), as jsonb text
-- (jsonb prints keys sorted and without duplicates, so equal values encode equally),
-- the time as integer microseconds since the epoch (no time zone, no formatting).
-- Written without a SET clause (every name qualified), so the planner inlines it: a SQL
-- function with one is planned again at every call, on every append.
create function app.audit_row_hash(r app.audit_log) returns bytea
    language sql stable parallel safe
    as $$
        select pg_catalog.sha256(r.prev_hash operator(pg_catalog.||) pg_catalog.convert_to(
            pg_catalog.jsonb_build_array(
                r.version, r.org_id, r.account_id, r.seq,
                (extract(epoch from r.occurred_at) operator(pg_catalog.*) 1000000)::bigint,
                r.actor_type, r.actor_id, r.actor_name, r.action, r.targets, r.context,
                r.metadata)::text,
            'UTF8'))
    $$;
comment on function app.audit_row_hash(app.audit_log) is
    'The hash of an audit row: SHA-256 over prev_hash and the row''s canonical encoding (version 1).';

-- Appends to the row's chain: the next seq, the previous hash, the time (never earlier
-- than the previous row's, so time and seq order agree), the hash.
create function app.audit_log_chain() returns trigger
    language plpgsql volatile
    set search_path = pg_catalog, pg_temp
    as $$
    declare
        v_chain uuid := coalesce(new.org_id, new.account_id);
        v_last app.audit_log;
    begin
        if (select count(*) from jsonb_object_keys(case when jsonb_typeof(new.metadata) = 'object'
                                                        then new.metadata else '{}' end)) > 50 then
            raise exception 'audit metadata has more than 50 keys' using errcode = '22023';
        end if;
        perform pg_advisory_xact_lock(1635083380, hashtext(v_chain::text));
        select l.* into v_last from app.audit_log l
         where l.chain_id = v_chain order by l.seq desc limit 1;
        new.seq := coalesce(v_last.seq, 0) + 1;
        new.prev_hash := coalesce(v_last.hash, decode(repeat('00', 32), 'hex'));
        new.occurred_at := greatest(clock_timestamp(), v_last.occurred_at);
        new.version := 1;
        new.hash := app.audit_row_hash(new);
        return new;
    end
    $$;
comment on function app.audit_log_chain() is
    'Trigger: sets seq, prev_hash, occurred_at and hash of a new audit row under the chain''s lock.';
create trigger audit_log_chain before insert on app.audit_log
    for each row execute function app.audit_log_chain();

-- Filters of GET /v1/orgs/{org_id}/audit-log that an index serves; the rest (action
-- prefix, target, time) filter the newest-first walk of the primary key.
create index audit_log_actor_idx on app.audit_log (chain_id, actor_id, seq) where actor_id is not null;
-- The retention purge finds deleted orgs' chains by their last row.
create index audit_log_org_deleted_idx on app.audit_log (occurred_at) where action = 'org.deleted';

-- org_events, folded in: its rows become the first links of each org's chain, in the
-- order they were written, with the dotted action names the log uses from now on (the
-- chain's time is now; the event's own time is kept in metadata.originally_at).
insert into app.audit_log (org_id, occurred_at, actor_type, actor_id, actor_name, action, targets, metadata,
                           prev_hash, hash, seq)
select e.org_id, e.created_at,
       case when e.actor_user_id is null then 'system' else 'user' end,
       e.actor_user_id, u.email,
       case e.action
           when 'org_created' then 'org.created'
           when 'org_updated' then 'org.updated'
           when 'member_role_changed' then 'member.role_changed'
           when 'member_removed' then 'member.removed'
           when 'member_left' then 'member.left'
           when 'ownership_transferred' then 'org.ownership_transferred'
           when 'invitation_created' then 'invitation.created'
           when 'invitation_revoked' then 'invitation.revoked'
           when 'invitation_resent' then 'invitation.resent'
           when 'invitation_accepted' then 'invitation.accepted'
           when 'invitation_declined' then 'invitation.declined'
           when 'api_key_created' then 'api_key.created'
           when 'api_key_renamed' then 'api_key.updated'
           when 'api_key_rotated' then 'api_key.rotated'
           when 'api_key_revoked' then 'api_key.revoked'
           when 'usage_threshold_reached' then 'usage.threshold_reached'
           when 'plan_changed' then 'plan.changed'
           else 'legacy.' || e.action
       end,
       case when e.target_user_id is null and e.target_email is null then '[]'::jsonb
            else jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
                'type', 'user', 'id', e.target_user_id, 'name', e.target_email)))
       end,
       e.metadata || jsonb_build_object('migrated_from', 'org_events', 'originally_at', e.created_at),
       decode(repeat('00', 32), 'hex'), decode(repeat('00', 32), 'hex'), 1
  from app.org_events e
  left join app.users u on u.id = e.actor_user_id
 order by e.org_id, e.created_at, e.id;

drop table app.org_events;
