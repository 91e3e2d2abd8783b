"""Fleet memory: copy vehicles' segments into one Milvus collection and ask it questions.

``sync``: read a vehicle's SQLite memory and push it (idempotent, resumable).
``outbox``: the node's durable queue of segments still to mirror, and the thread that sends them.
``cli``: the ``spartan-fleet`` command (push, query, status).
"""
