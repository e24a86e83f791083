DROP TABLE audit_events;
DROP TABLE idempotency_keys;
DROP TABLE service_accounts;
DROP TABLE roles;
DROP TABLE projects;
DROP TABLE organizations;
