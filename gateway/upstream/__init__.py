"""The upstream side: the keep-alive connection pool (`pool`) and forwarding a request through it,
bodies and answers streamed as they are, WebSockets relayed (`forwarding`)."""
