"""HTTP data path: downstream and upstream connections and the exchange between them."""
