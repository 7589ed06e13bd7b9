-- The assistant's bench dataset (issue 15), set-based, run as the cluster's superuser by
-- benches/load.sh after benches/seed.sql:
--   psql -v part=alone|crowded -v words="$(cat benches/assistant-words.txt)" -f benches/assistant-seed.sql
--
-- One global numbering of 1,000,000 chunks, n = 1..1000000: every 100th (n % 100 = 0,
-- 10,000 chunks) belongs to the target org T (seeded org 1, whose owner asks), the rest
-- (990,000) to the 999 other orgs (seeded orgs 2..1000, created here when the run seeded
-- fewer), 1 + n % 999 -> about 991 each. Each org's chunks form documents of 20 chunks,
-- status ready. A chunk's text is a pure function of n, so T's chunks are the same text
-- in both parts:
--   part=alone    T's 10,000 chunks only;
--   part=crowded  every org's, T's included (T's are deleted and inserted again in
--                 numbering order, so they lie spread over the heap among the others', as
--                 a real tenant mix would write them, not packed at its start).
--
-- Text: 20,000 paragraphs of 40-60 words drawn from benches/assistant-words.txt (the
-- vocabulary of English technical prose, one "word weight" line each: words are drawn in
-- proportion to their weight, so "the" is everywhere and "allocation" in a few percent),
-- a chunk 4-7 paragraphs (about 1.2-2 KB). Every org shares the vocabulary, so a question's
-- common words match chunks of every org.
\set ON_ERROR_STOP on
\set org_t '0000000a-0000-4000-8000-100000000001'
select pg_catalog.set_config('maintenance_work_mem', '1GB', false);

-- Deterministic draws: a 31-bit hash of (a, b).
create or replace function pg_temp.draw(a bigint, b bigint) returns bigint
language sql immutable parallel safe
return hashint8extended(a * 1000003 + b, 42) & 2147483647;

create temp table bench_words as
select split_part(l, ' ', 1) as word, split_part(l, ' ', 2)::int as weight
  from string_to_table(:'words', E'\n') l
 where l ~ '^[a-z]+ [0-9]+$';

-- The bag: each word as many times as its weight; a uniform draw is a weighted one.
create temp table bench_bag as
select row_number() over (order by w.word, g) - 1 as i, w.word
  from bench_words w, generate_series(1, w.weight) g;
create unique index on bench_bag (i);
analyze bench_bag;

create temp table bench_paragraphs as
select p.id, string_agg(b.word, ' ' order by k) || '.' as text
  from generate_series(0, 19999) p(id)
 cross join lateral generate_series(1, 40 + (pg_temp.draw(p.id, 0) % 21)::int) k
  join bench_bag b on b.i = pg_temp.draw(p.id, k) % (select count(*) from bench_bag)
 group by p.id;
create unique index on bench_paragraphs (id);
analyze bench_paragraphs;

-- Org index o: 0 is T, 1..999 the others; k numbers an org's chunks in order of n.
create temp table bench_plan as
select n, o, k,
       case when o = 0 then :'org_t'::uuid
            else ('0000000a-0000-4000-8000-' || (100000000001 + o))::uuid end as org_id,
       ('0000000e-0000-4000-8000-' || lpad((o * 1000 + k / 20)::text, 12, '0'))::uuid as document_id,
       (k % 20)::int as chunk_no
  from (select n, o, row_number() over (partition by o order by n) - 1 as k
          from (select n, case when n % 100 = 0 then 0 else 1 + (n % 999)::int end as o
                  from generate_series(1, 1000000) n) g
         where :'part' = 'crowded' or o = 0) p;

begin;
-- Consistent by construction: skip per-row FK and accounting triggers.
set local session_replication_role = replica;
-- The other orgs, when the run seeded fewer than 1,000 (no members: nobody asks there).
insert into app.orgs (id, name, slug, personal)
select distinct org_id, 'Bench org ' || (o + 1), 'bench-' || (o + 1), true
  from bench_plan on conflict do nothing;
insert into app.org_settings (org_id) select distinct org_id from bench_plan on conflict do nothing;
insert into app.documents (id, org_id, title, filename, content_type, bytes, sha256, status,
                           chunk_count, text_bytes, created_at, updated_at, processed_at)
select document_id, org_id, 'Bench document ' || min(k) / 20 || ' of org ' || min(o) + 1,
       'doc-' || min(k) / 20 || '.txt', 'text/plain', 30000, sha256(uuid_send(document_id)), 'ready',
       count(*), 30000, now(), now(), now()
  from bench_plan
 group by document_id, org_id
on conflict do nothing;
delete from app.document_chunks where org_id in (select distinct org_id from bench_plan);
commit;

-- 1,000,000 rows load much faster into a table without its search indexes: drop them
-- (whatever they are: sql/ and policies/ decide), load, build them again.
create temp table bench_indexes as
select indexname, indexdef from pg_indexes
 where schemaname = 'app' and tablename = 'document_chunks' and indexname <> 'document_chunks_pkey'
   and :'part' = 'crowded';
do $$ declare r record; begin
    for r in select * from bench_indexes loop execute format('drop index app.%I', r.indexname); end loop;
end $$;

begin;
set local session_replication_role = replica;
insert into app.document_chunks (org_id, document_id, chunk_no, content)
select p.org_id, p.document_id, p.chunk_no, t.text
  from bench_plan p
 cross join lateral (select string_agg(b.text, E'\n\n' order by j) as text
                       from generate_series(1, 4 + (pg_temp.draw(p.n, 0) % 4)::int) j
                       join bench_paragraphs b on b.id = pg_temp.draw(p.n, j) % 20000) t
 order by p.n;
commit;

do $$ declare r record; begin
    for r in select * from bench_indexes loop execute r.indexdef; end loop;
end $$;

-- The word counts retrieval picks its candidates with (app.search_terms, sql/V17), which
-- the trigger on document_chunks keeps and session_replication_role = replica skipped:
-- counted again for the orgs loaded, an org at a time, as the migration does.
begin;
delete from app.search_terms where org_id in (select distinct org_id from bench_plan);
select count(*) as orgs_counted
  from (select app.search_terms_add(array_agg(c.org_id), array_agg(c.search), 1)
          from app.document_chunks c
         where c.org_id in (select distinct org_id from bench_plan)
         group by c.org_id) counted;
commit;
vacuum analyze app.orgs, app.org_settings, app.documents, app.document_chunks, app.search_terms;
select count(distinct org_id) as orgs, count(*) as chunks,
       count(*) filter (where org_id = :'org_t') as target_chunks,
       round(avg(octet_length(content))) as avg_bytes
  from app.document_chunks;
