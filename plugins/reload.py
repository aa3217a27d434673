"""Hot reload of the tasks folder in development (``settings={"reload": True}``)."""

from __future__ import annotations
