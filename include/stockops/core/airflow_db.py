"""How Airflow's SQLite metadata DB (``make run``'s) is opened: what ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS``
names (every Airflow process imports it, so it imports nothing).

SQLite has one writer. Its default busy timeout is 5 s: when a task's state update, the scheduler and a click on
*Trigger* wrote at once on a loaded machine, the click's INSERT waited 5 s and the UI showed a 500 ("Database
error"). With 30 s such a write waits its turn. PostgreSQL (compose, the Celery platform) does not use this.
"""

CONNECT_ARGS = {"timeout": 30.0}  # seconds a write waits for SQLite's lock (sqlite3.connect's busy timeout)
