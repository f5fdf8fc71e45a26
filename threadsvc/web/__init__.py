"""HTTP: who is calling (auth), what they ask (api), how it is answered (responses, errors)."""
