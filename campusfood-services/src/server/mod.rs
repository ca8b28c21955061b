//! What every architecture's HTTP side shares: the routes each service
//! answers the same way (`/health`, `/openapi.json`, `/configure`,
//! inventory's router).

pub mod routes;
