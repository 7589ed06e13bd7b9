-- email_outbox: nobody reads or writes it directly; only the functions in functions_email.sql.
alter table app.email_outbox enable row level security;
alter table app.email_outbox force row level security;

drop policy if exists email_outbox_guard on app.email_outbox;
create policy email_outbox_guard on app.email_outbox as restrictive for all
    to palisade_runtime, palisade_credentials, palisade_jobs
    using (false) with check (false);

drop policy if exists email_outbox_all_definer on app.email_outbox;
create policy email_outbox_all_definer on app.email_outbox for all to palisade_owner
    using (true) with check (true);

revoke all on app.email_outbox from public, palisade_runtime, palisade_credentials, palisade_jobs;

comment on policy email_outbox_guard on app.email_outbox is
    'Restrictive: only the security definer functions enqueue, claim and mark emails.';
comment on policy email_outbox_all_definer on app.email_outbox is
    'app.enqueue_email(), app.claim_emails(), app.mark_email_sent(), app.mark_email_failed(), app.operator_retry_emails() (owner: palisade outbox retry).';
