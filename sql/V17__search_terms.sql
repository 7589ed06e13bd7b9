-- V17: the assistant's retrieval ranks a few hundred chunks, not every chunk of the org
-- (issue 15).
--
-- Why: a question's common words ("the", "is", "how", and in a technical corpus "data",
-- "version") are in nearly every chunk, so matching any word of the question matched and
-- ranked all of an org's chunks: ~27 ms for 10,000, and the runtime role cannot use the
-- search index (`@@` is not leakproof, so under row-level security it is never an index
-- condition). Retrieval now takes its candidates from the chunks holding the question's
-- RAREST words in the org (app.search_chunks, policies/functions_assistant.sql), found
-- through the index below, and ranks only those under the caller's own policies.
--
--   app.search_terms              in how many of an org's chunks each lexeme occurs (the
--                                 row with the empty lexeme: how many chunks the org has);
--                                 kept exact by a trigger on app.document_chunks
--   app.chunk_search_key(...)     a chunk's lexemes, each prefixed by its org ("<org id>
--                                 <lexeme>"): each (org, word) pair has its own posting
--                                 list in the index below, as long as the org's count of
--                                 the word. (A lexeme naming the org ANDed with the words
--                                 reads every org's postings of a common word: 16 ms among
--                                 1,000 orgs, benches/README-performance.md.) Lexemes
--                                 longer than 2,000 bytes are left out (2,047 is the most
--                                 a lexeme may hold)
--   document_chunks_org_search_idx  replaces document_chunks_search_idx (search alone)

create function app.chunk_search_key(p_org_id uuid, p_search tsvector) returns tsvector
language sql immutable parallel safe
return pg_catalog.array_to_tsvector(array(
    select p_org_id::text operator(pg_catalog.||) ' ' operator(pg_catalog.||) l.lexeme
      from pg_catalog.unnest(pg_catalog.tsvector_to_array(p_search)) l(lexeme)
     where pg_catalog.octet_length(l.lexeme) operator(pg_catalog.<=) 2000));
revoke all on function app.chunk_search_key(uuid, tsvector) from public;
comment on function app.chunk_search_key(uuid, tsvector) is
    'A chunk''s lexemes, each prefixed by its org id and a space: the expression of document_chunks_org_search_idx.';

drop index app.document_chunks_search_idx;
create index document_chunks_org_search_idx on app.document_chunks
    using gin (app.chunk_search_key(org_id, search));

create table app.search_terms (
    org_id  uuid    not null,
    lexeme  text    not null,
    chunks  integer not null,
    constraint search_terms_pkey primary key (org_id, lexeme)
);
comment on table app.search_terms is
    'In how many of the org''s chunks each lexeme occurs; lexeme '''' counts the org''s chunks. Written only by the trigger on app.document_chunks; read only by app.search_chunks().';

-- No foreign key to app.orgs: deleting an org deletes its chunks, which takes every count
-- of the org to zero, and rows at zero are deleted.
create function app.search_terms_add(p_org_ids uuid[], p_searches tsvector[], p_sign integer)
returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_orgs uuid[];
    v_lexemes text[];
    v_counts integer[];
begin
    -- Counted once, sorted: two transactions counting into the same org lock its rows in
    -- one order, the org's '' row first.
    select array_agg(d.org_id order by d.org_id, d.lexeme), array_agg(d.lexeme order by d.org_id, d.lexeme),
           array_agg(d.n order by d.org_id, d.lexeme)
      into v_orgs, v_lexemes, v_counts
      from (select c.org_id, l.lexeme, count(*)::integer as n
              from unnest(p_org_ids, p_searches) c(org_id, search)
             cross join unnest(tsvector_to_array(c.search)) l(lexeme)
             group by 1, 2
             union all
            select c.org_id, '', count(*)::integer from unnest(p_org_ids) c(org_id) group by 1) d;
    insert into app.search_terms as t (org_id, lexeme, chunks)
    select u.org_id, u.lexeme, p_sign * u.n
      from unnest(v_orgs, v_lexemes, v_counts) with ordinality u(org_id, lexeme, n, ord)
     order by u.ord
        on conflict (org_id, lexeme) do update set chunks = t.chunks + excluded.chunks;
    -- Only the counts just taken down: an org's whole vocabulary may be large.
    if p_sign < 0 then
        delete from app.search_terms t
         using unnest(v_orgs, v_lexemes) u(org_id, lexeme)
         where t.org_id = u.org_id and t.lexeme = u.lexeme and t.chunks <= 0;
    end if;
end
$$;
revoke all on function app.search_terms_add(uuid[], tsvector[], integer) from public;
comment on function app.search_terms_add(uuid[], tsvector[], integer) is
    'Adds (p_sign 1) or removes (-1) chunks'' lexemes to or from app.search_terms.';

create function app.search_terms_count() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if tg_op in ('INSERT', 'UPDATE') then
        perform app.search_terms_add(array_agg(c.org_id), array_agg(c.search), 1) from new_chunks c;
    end if;
    if tg_op in ('DELETE', 'UPDATE') then
        perform app.search_terms_add(array_agg(c.org_id), array_agg(c.search), -1) from old_chunks c;
    end if;
    return null;
end
$$;
revoke all on function app.search_terms_count() from public;
comment on function app.search_terms_count() is
    'Trigger: keeps app.search_terms equal to the lexeme counts of app.document_chunks.';

create trigger document_chunks_count_terms_insert after insert on app.document_chunks
    referencing new table as new_chunks for each statement execute function app.search_terms_count();
create trigger document_chunks_count_terms_update after update on app.document_chunks
    referencing old table as old_chunks new table as new_chunks
    for each statement execute function app.search_terms_count();
create trigger document_chunks_count_terms_delete after delete on app.document_chunks
    referencing old table as old_chunks for each statement execute function app.search_terms_count();

-- The chunks already there, an org at a time.
select app.search_terms_add(array_agg(c.org_id), array_agg(c.search), 1)
  from app.document_chunks c
 group by c.org_id;
