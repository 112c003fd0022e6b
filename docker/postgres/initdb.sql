-- First start of the `db` service of docker-compose.yml (docs/operations.md, docs/security.md).
-- The PostgreSQL image runs this once, on an empty data volume, as its bootstrap
-- superuser, connected to POSTGRES_DB (which it has just created). It sets up what
-- core/ops/embedded.py's _bootstrap sets up for development (docs/operations.md,
-- "Your own PostgreSQL"): the owner role, not a superuser, so row-level security holds for
-- migrations, the seed and the purges too; it owns the database and creates the
-- runtime role later (`migrate` runs create_runtime_role), hence CREATEROLE.
-- Reads OWNER_DB_USER and OWNER_DB_PASSWORD from the container's environment; the
-- psql variables quote them (:"identifier", :'literal').

\set ON_ERROR_STOP on
\getenv owner OWNER_DB_USER
\getenv owner_password OWNER_DB_PASSWORD
\getenv database POSTGRES_DB

CREATE ROLE :"owner" LOGIN CREATEROLE NOSUPERUSER NOCREATEDB NOBYPASSRLS
    PASSWORD :'owner_password';
ALTER DATABASE :"database" OWNER TO :"owner";
ALTER SCHEMA public OWNER TO :"owner";

-- `vector` is not a trusted extension: only a superuser may create it. The owner's
-- migrations then find it present.
CREATE EXTENSION IF NOT EXISTS vector;

-- Under row-level security PostgreSQL lets an index serve only operators marked
-- LEAKPROOF: these back the full-text (@@), array (@>, &&), jsonb (@>) and ILIKE
-- (trigram) searches that the GIN indexes exist for, and none of them raises on data.
-- Superuser only.
ALTER FUNCTION ts_match_vq(tsvector, tsquery) LEAKPROOF;
ALTER FUNCTION arraycontains(anyarray, anyarray) LEAKPROOF;
ALTER FUNCTION arrayoverlap(anyarray, anyarray) LEAKPROOF;
ALTER FUNCTION jsonb_contains(jsonb, jsonb) LEAKPROOF;
ALTER FUNCTION texticlike(text, text) LEAKPROOF;

-- The same in template1, so every database made later (a test database) has them.
\connect template1
CREATE EXTENSION IF NOT EXISTS vector;
ALTER FUNCTION ts_match_vq(tsvector, tsquery) LEAKPROOF;
ALTER FUNCTION arraycontains(anyarray, anyarray) LEAKPROOF;
ALTER FUNCTION arrayoverlap(anyarray, anyarray) LEAKPROOF;
ALTER FUNCTION jsonb_contains(jsonb, jsonb) LEAKPROOF;
ALTER FUNCTION texticlike(text, text) LEAKPROOF;
