"""Client-side apps: the Flower ClientApp (``client_app``/``task``), Avalanche replay, edge trainer."""
