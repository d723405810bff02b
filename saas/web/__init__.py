"""What routes use: the typed request context, the FastAPI dependencies, the OpenAPI schema's
rewriting, and the health routes. Below the domains (their routes import it), above the kit."""
