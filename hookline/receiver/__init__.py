"""The webhook receiver: ``app`` (ASGI app, `create_app`), ``handler`` (POST /webhooks/...),
``verify`` (signature schemes), ``envelope``, ``sources`` (hookline.yaml sections),
``ratelimit``, ``metrics``, ``logs``, ``openapi``, ``cli`` (`hookline serve`)."""
