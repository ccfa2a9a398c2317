# The concentrator's Airflow image: the official Airflow 3.3.2 image, our pinned requirements,
# and the DAG package (dags/, plugins/rpu, include/sql) baked in.
#   docker compose build          (docker-compose.yaml builds it as rpu-concentrateur:<RPU_VERSION>)
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}

# requirements.txt is our lock (uv pip compile, Python 3.11): it must pin the very Airflow the
# image ships, so that installing it never swaps Airflow itself underneath the image.
COPY --chown=airflow:0 requirements.txt /opt/rpu/requirements.txt
RUN grep -qx "apache-airflow==${AIRFLOW_VERSION}" /opt/rpu/requirements.txt \
      || { echo "requirements.txt ne fixe pas apache-airflow==${AIRFLOW_VERSION} (version de l'image)" >&2; exit 1; } \
 && pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /opt/rpu/requirements.txt

# The code. plugins/ is on Airflow's sys.path and plugins/.airflowignore keeps the plugin
# manager out of rpu/; the editable install also gives the `rpu` command (rpu region check,
# rpu establishments sync ...) and keeps include/sql at the place rpu.store.db looks for it.
COPY --chown=airflow:0 pyproject.toml /opt/airflow/pyproject.toml
COPY --chown=airflow:0 include/ /opt/airflow/include/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
RUN pip install --no-cache-dir --no-deps -e /opt/airflow

# Mount points: the region directory (read-only) and the exports volume, group 0 writable as
# the image expects for any AIRFLOW_UID.
USER root
RUN install -d -o airflow -g 0 -m 2770 /opt/rpu/exports \
 && install -d -o airflow -g 0 -m 0755 /opt/rpu/region
USER airflow

ENV RPU_SQL_DIR=/opt/airflow/include/sql \
    RPU_REGION_CONFIG=/opt/rpu/region/region.toml
