"""HTTP routes, one module per resource, each an APIRouter(prefix, tags)."""
