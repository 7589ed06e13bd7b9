-- compose only: development passwords for the login roles deploy/roles.sql creates (run
-- right after it, at the first start of the compose Postgres volume, in the database
-- `palisade` that POSTGRES_DB creates), and the owner of that database. A production
-- deployment sets its own passwords, and refuses these.
alter role palisade_owner password 'owner-dev-password';
alter role palisade_app password 'app-dev-password';
alter role palisade_auth password 'auth-dev-password';
alter role palisade_worker password 'worker-dev-password';
alter database palisade owner to palisade_owner;
