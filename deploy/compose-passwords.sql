-- compose only: development passwords for the login roles deploy/roles.sql creates
-- (run right after it, at the first start of the compose Postgres volume). A production
-- deployment sets its own, and refuses these.
alter role palisade_owner password 'owner-dev-password';
alter role palisade_app password 'app-dev-password';
alter role palisade_auth password 'auth-dev-password';
alter role palisade_worker password 'worker-dev-password';
create database palisade owner palisade_owner;
