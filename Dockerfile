# The official Airflow image plus this project's pinned environment and package.
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root requirements.txt /opt/stockops/requirements.txt
RUN pip install --no-cache-dir uv==0.13.9 \
 && uv pip install --python "$(command -v python)" --no-cache -r /opt/stockops/requirements.txt
COPY --chown=airflow:root . /opt/stockops
RUN uv pip install --python "$(command -v python)" --no-deps -e /opt/stockops
