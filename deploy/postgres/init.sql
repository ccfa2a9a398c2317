-- First start of the postgres service only (docker-entrypoint-initdb.d, empty data volume):
-- Airflow's metadata database and the regional RPU database, each with its own owner.
-- Passwords come from the container's environment (psql 15+ \getenv), i.e. from the .env file;
-- nothing secret is written here. To change a password later: ALTER ROLE ... PASSWORD ..., then .env.
\set ON_ERROR_STOP on

\getenv airflow_password AIRFLOW_DB_PASSWORD
\getenv rpu_password RPU_DB_PASSWORD
\if :{?airflow_password}
\else
  \warn 'AIRFLOW_DB_PASSWORD absent de l''environnement du service postgres (.env)'
  SELECT 1/0 AS "AIRFLOW_DB_PASSWORD manquant";
\endif
\if :{?rpu_password}
\else
  \warn 'RPU_DB_PASSWORD absent de l''environnement du service postgres (.env)'
  SELECT 1/0 AS "RPU_DB_PASSWORD manquant";
\endif

CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow ENCODING 'UTF8' TEMPLATE template0;
REVOKE ALL ON DATABASE airflow FROM PUBLIC;

-- The regional database: its schema is created by `rpu db migrate` (airflow-init, then every
-- rpu_ingest run), owned by the rpu role.
CREATE ROLE rpu LOGIN PASSWORD :'rpu_password';
CREATE DATABASE rpu OWNER rpu ENCODING 'UTF8' TEMPLATE template0;
REVOKE ALL ON DATABASE rpu FROM PUBLIC;
\connect rpu
ALTER SCHEMA public OWNER TO rpu;
