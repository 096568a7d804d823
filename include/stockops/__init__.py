"""stockops: a daily MLOps platform for a stock-price LSTM, orchestrated by Airflow 3.

Importing the package is cheap and has no side effects; heavy libraries are imported
inside the functions that need them.
"""

__version__ = "0.1.0"
