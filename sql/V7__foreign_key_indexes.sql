-- V7: an index behind every foreign key.
--
-- Why: deleting a user or an org makes PostgreSQL find the referencing rows (to cascade or
-- set null). Without an index on the referencing column that is a scan of the whole table
-- per deleted row. Every foreign key column that is not the leading column of an
-- existing index gets one here.

create index orgs_created_by_idx on app.orgs (created_by);
create index users_current_org_id_idx on app.users (current_org_id);
create index email_outbox_user_id_idx on app.email_outbox (user_id);
create index email_outbox_org_id_idx on app.email_outbox (org_id);
create index invitations_invited_by_idx on app.invitations (invited_by);
create index invitations_accepted_by_idx on app.invitations (accepted_by);
create index org_events_actor_user_id_idx on app.org_events (actor_user_id);
create index org_events_target_user_id_idx on app.org_events (target_user_id);
