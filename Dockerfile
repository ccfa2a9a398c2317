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
# setup.py compiles the PATIENT reader (plugins/rpu/formats/patient_reader.pyx, Cython over
# lxml's C API) and the COPY row of a clean visit (plugins/rpu/store/clean_rows.pyx), hence a C
# compiler in the image (the way Airflow's image docs add one). Without them the Python paths
# read and write every visit (same results, slower): the build fails instead, so that an image
# never runs without them unnoticed.
COPY --chown=airflow:0 pyproject.toml setup.py /opt/airflow/
COPY --chown=airflow:0 include/ /opt/airflow/include/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
USER root
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
USER airflow
RUN pip install --no-cache-dir --no-deps -e /opt/airflow \
 && python -c "from rpu.formats.oscour import COMPILED_READER; assert COMPILED_READER, 'lecteur compilé absent'" \
 && python -c "from rpu.store.copy_in import COMPILED_ROWS; assert COMPILED_ROWS, 'lignes COPY compilées absentes'"

# Mount points: the region directory (read-only) and the exports volume, group 0 writable as
# the image expects for any AIRFLOW_UID.
USER root
RUN install -d -o airflow -g 0 -m 2770 /opt/rpu/exports \
 && install -d -o airflow -g 0 -m 0755 /opt/rpu/region
USER airflow

ENV RPU_SQL_DIR=/opt/airflow/include/sql \
    RPU_REGION_CONFIG=/opt/rpu/region/region.toml
