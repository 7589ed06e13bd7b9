-- updated_at: every table in schema app with an updated_at column gets it from one
-- trigger, set on every update whoever updates (no statement sets it by hand, and the
-- runtime roles have no grant on the column).
create or replace function app.touch_updated_at() returns trigger
    language plpgsql volatile
    set search_path = pg_catalog, pg_temp
    as $$
    begin
        new.updated_at := pg_catalog.now();
        return new;
    end
    $$;
comment on function app.touch_updated_at() is 'Trigger: sets updated_at to now() on every update.';
revoke all on function app.touch_updated_at() from public;

do $$
declare
    t record;
begin
    for t in select c.relname from pg_catalog.pg_class c
               join pg_catalog.pg_namespace n on n.oid = c.relnamespace
               join pg_catalog.pg_attribute a on a.attrelid = c.oid
              where n.nspname = 'app' and c.relkind = 'r' and a.attname = 'updated_at' and not a.attisdropped
    loop
        execute pg_catalog.format(
            'create or replace trigger %I before update on app.%I for each row execute function app.touch_updated_at()',
            t.relname || '_touch_updated_at', t.relname);
    end loop;
end
$$;
