"""What every resolver is given: the request, the server's services, and the caller."""

from __future__ import annotations

from fastapi import Request
from strawberry.fastapi import BaseContext

from offmaps.access import Principal
from offmaps.server.auth import current_principal
from offmaps.server.links import base_url
from offmaps.services import Services

__all__ = ["GraphQLContext", "context_of"]


class GraphQLContext(BaseContext):
    """The context of one GraphQL request.

    The caller is known once the operation's fields have been authorised
    (:class:`~offmaps.server.graphql.security.Authorize`), before any resolver runs.
    """

    def __init__(self, request: Request) -> None:
        super().__init__()
        self.http = request
        self.services: Services = request.app.state.services
        self.authorised: Principal | None = None

    @property
    def principal(self) -> Principal:
        """The caller, as authorised for this operation (else from the request's token).

        Raises:
            InvalidTokenError: a bad token.
        """
        if self.authorised is None:
            self.authorised = current_principal(self.http)
        return self.authorised

    @property
    def base(self) -> str:
        """The server's URL, for links."""
        return base_url(self.http)


async def context_of(request: Request) -> GraphQLContext:
    """The context of ``request`` (a FastAPI dependency of the GraphQL router)."""
    return GraphQLContext(request)
