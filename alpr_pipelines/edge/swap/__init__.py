"""Hot swaps: following the registry (``poller``), preparing a new version off the frame path (``prefetch``), and how
frames and loading share the CPU (``policy``: turns, priorities, the spare fetcher). This package imports nothing by
itself, so the prefetch child stays lean."""
