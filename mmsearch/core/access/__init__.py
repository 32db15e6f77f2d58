"""Who may do what: API keys with scopes and scenes, the checks every entry point runs, rate limits.

- :mod:`.keys`: a key (id, hashed secret, scopes, scenes, rate), the key file's
  format, minting (``mmsearch keys create``) and constant-time verification;
- :mod:`.keyring`: the key file a service reads, reloaded when it changes
  (rotation without restart);
- :mod:`.policy`: pure decisions (authenticate a credential, authorize a scope
  and a scene) raising :class:`.policy.Refusal` with the words every entry point
  answers;
- :mod:`.ratelimit`: token buckets per caller, and the client address behind
  trusted proxies;
- :mod:`.settings`: the ``MMSEARCH_*`` variables of access, shared by web and serving.

Entry points (web's middleware, the gRPC interceptor of
:mod:`mmsearch.services.runtime.access`) are thin adapters over these.
"""
