"""Webhooks (docs/api.md#webhooks): which URLs they may name (address.py), how deliveries are signed
(signing.py), who may manage them (service.py), and the worker that sends them (worker.py).

The store queues a delivery inside the transaction of every status change (a transactional
outbox, see store/webhooks.py); the worker, started in the app's lifespan beside the
runner, sends what is due.
"""
