"""One HTTP/1.1 transport for the router and the load generator: httptools parsers on asyncio protocols.

``wire`` holds the message types and encoders, ``server`` the server protocol with its limits and
timeouts (the router's front door), ``client`` the keep-alive connection pool both the router's
upstreams and the load generator send through. Nothing here knows about models or fleets.
"""
