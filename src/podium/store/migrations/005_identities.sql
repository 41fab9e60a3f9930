-- Players who sign in without a Podium password (issue 14): through an external
-- identity provider's JWTs (kind 'external': its issuer and `sub`) or a device id
-- (kind 'device': issuer '', subject the SHA-256 hex of the device id, which is a
-- bearer secret and not stored as such). Such a player has no email or password
-- until a device player links one (POST /auth/link).

ALTER TABLE users ALTER COLUMN email DROP NOT NULL;
ALTER TABLE users ALTER COLUMN password_hash DROP NOT NULL;

CREATE TABLE identities (
    kind       text NOT NULL CHECK (kind IN ('external', 'device')),
    issuer     text NOT NULL,
    subject    text NOT NULL,
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, issuer, subject)
);
CREATE INDEX identities_user_idx ON identities (user_id);
