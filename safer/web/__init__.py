"""`safer web`: the read-only web app for practitioners, auditors, DPOs and analysts.

Floor 5 (the app shell): it uses the inbox flow shared with `safer inbox`
(``safer._inbox_flow``), the audit reports the CLI computes, and the
recipient adapters' inboxes, so it cannot sit lower. It holds no logic a
lower package should own: pages render what those functions return.

Public surface: ``WebConfig``, ``create_app``, ``protect``, ``web_secret``,
``serve``.
"""

from ._app import WebConfig, create_app, protect, web_secret
from ._serve import serve

__all__ = ["WebConfig", "create_app", "protect", "serve", "web_secret"]
