"""Client of the multi-modal product search gateway: library (sync + asyncio), CLI and load generator.

    from client import SearchClient, SearchFilters
    with SearchClient("127.0.0.1:50051") as c:
        hits = c.search("red ankle boots", filters=SearchFilters(max_price=80)).hits
"""
from client.aio import AsyncSearchClient
from client.connection import ConnectionConfig
from client.errors import GatewayError
from client.messages import SearchFilters
from client.retry import RetryPolicy
from client.sync import SearchClient

__all__ = ["AsyncSearchClient", "ConnectionConfig", "GatewayError", "RetryPolicy", "SearchClient", "SearchFilters"]
