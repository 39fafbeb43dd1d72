/// Forward-only schema versions. Never edit a registered migration: append a new one.
/// Times are integer milliseconds since 1970 (UTC), as in the SQLite store, so rows copy across
/// unchanged and replies are identical whichever store produced them.
enum PostgresMigrations {
    struct Migration {
        var version: Int
        var description: String
        var statements: [String]
    }

    /// Any constant both replicas agree on: the key of the advisory lock that serialises migrations.
    static let lockKey: Int64 = 0x6375_7374_6d69_6772  // "custmigr"

    static let all: [Migration] = [
        Migration(version: 1, description: "merchants, keys, plans, customers, subscriptions, processed requests", statements: [
            """
            CREATE TABLE merchants (
                id text PRIMARY KEY,
                name text NOT NULL,
                created_at bigint NOT NULL
            )
            """,
            """
            CREATE TABLE api_keys (
                id text PRIMARY KEY,
                merchant_id text NOT NULL REFERENCES merchants(id),
                type text NOT NULL CHECK (type IN ('secret', 'publishable')),
                key_hash bytea NOT NULL,
                created_at bigint NOT NULL,
                revoked_at bigint
            )
            """,
            "CREATE INDEX api_keys_merchant ON api_keys(merchant_id)",
            """
            CREATE TABLE plans (
                merchant_id text NOT NULL REFERENCES merchants(id),
                id text NOT NULL,
                name text NOT NULL,
                description text,
                currency text NOT NULL,
                price bigint NOT NULL CHECK (price >= 0),
                billing_cadence text NOT NULL CHECK (billing_cadence IN ('monthly', 'quarterly', 'annually')),
                trial_days bigint NOT NULL CHECK (trial_days >= 0),
                is_private boolean NOT NULL,
                status text NOT NULL CHECK (status IN ('available', 'archived')),
                is_default boolean NOT NULL,
                available_countries text,
                available_from bigint,
                PRIMARY KEY (merchant_id, id)
            )
            """,
            "CREATE UNIQUE INDEX plans_one_default ON plans(merchant_id) WHERE is_default",
            """
            CREATE TABLE customers (
                id text PRIMARY KEY,
                merchant_id text NOT NULL REFERENCES merchants(id),
                external_id text NOT NULL,
                name text, email text,
                billing_address1 text, billing_address2 text, billing_city text, billing_country text,
                billing_state text, billing_zip_code text,
                shipping_address1 text, shipping_address2 text, shipping_city text, shipping_country text,
                shipping_state text, shipping_zip_code text,
                quick_books_id text, stripe_id text,
                created_at bigint NOT NULL,
                updated_at bigint NOT NULL,
                UNIQUE (merchant_id, external_id)
            )
            """,
            """
            CREATE TABLE subscriptions (
                id text PRIMARY KEY,
                customer_id text NOT NULL REFERENCES customers(id),
                merchant_id text NOT NULL,
                plan_id text NOT NULL,
                status text NOT NULL CHECK (status IN ('pendingActivation', 'active', 'ended')),
                is_trial boolean NOT NULL,
                start_date bigint NOT NULL,
                end_date bigint,
                payment_gateway text CHECK (payment_gateway IN ('Stripe', 'QuickBooks')),
                created_at bigint NOT NULL,
                updated_at bigint NOT NULL,
                FOREIGN KEY (merchant_id, plan_id) REFERENCES plans(merchant_id, id)
            )
            """,
            "CREATE INDEX subscriptions_customer ON subscriptions(customer_id)",
            "CREATE INDEX subscriptions_plan ON subscriptions(merchant_id, plan_id)",
            """
            CREATE TABLE processed_requests (
                idempotency_key text PRIMARY KEY,
                merchant_id text NOT NULL REFERENCES merchants(id),
                fingerprint text NOT NULL,
                customer_id text NOT NULL REFERENCES customers(id),
                reply_type text NOT NULL,
                message_id text NOT NULL,
                reply_body bytea NOT NULL,
                created_at bigint NOT NULL
            )
            """,
            """
            CREATE TABLE health_checks (
                id integer PRIMARY KEY CHECK (id = 1),
                checked_at bigint NOT NULL
            )
            """,
        ]),
        Migration(version: 2, description: "handling attempts", statements: [
            """
            CREATE TABLE handling_attempts (
                key text PRIMARY KEY,              -- HandlingAttempt.key(messageID:body:)
                attempts integer NOT NULL,         -- started and not finished
                first_started_at bigint NOT NULL,
                last_started_at bigint NOT NULL
            )
            """,
        ]),
        // As SQLite's v4: records hold their reply in its stored form (`StoredReplyBody`), which a
        // worker of an earlier version would replay as it is; renamed, the column makes it fail
        // (undefined column: it retries, never replies) instead.
        Migration(version: 3, description: "records hold their reply in its stored form", statements: [
            "ALTER TABLE processed_requests RENAME COLUMN reply_body TO stored_reply",
        ]),
        // The same shape as SQLite's v3 and v5: a record is found through its customer (the
        // (merchant_id, external_id) index the customer's insert touches anyway) and is unique per
        // customer, so the index on the idempotency key, a hash written at random pages, goes;
        // keys stay unique, being derived from the merchant and the external id, unique together.
        // No query reads subscriptions by their customer, and no statement deletes a customer or
        // changes its id (the only use the foreign-key check would make of that index).
        Migration(version: 4, description: "records found through their customer; subscriptions without the customer index", statements: [
            "ALTER TABLE processed_requests DROP CONSTRAINT processed_requests_pkey",
            "ALTER TABLE processed_requests ADD CONSTRAINT processed_requests_customer_id_key UNIQUE (customer_id)",
            "DROP INDEX IF EXISTS subscriptions_customer",
        ]),
    ]
}
