"""Dates as operators read them: ISO order, 24 hours, one short line in an admin column.

English's own "Dec. 1, 2026, 12:40 p.m." takes two lines or 180 pixels per column, and
its month-first order reads differently in every country.
"""

DATE_FORMAT = "Y-m-d"
DATETIME_FORMAT = "Y-m-d H:i"
SHORT_DATE_FORMAT = DATE_FORMAT
SHORT_DATETIME_FORMAT = DATETIME_FORMAT
TIME_FORMAT = "H:i"
