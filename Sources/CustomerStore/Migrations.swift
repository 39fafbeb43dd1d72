import GRDB

/// Forward-only schema versions. Never edit a registered migration: add a new one.
enum Migrations {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: merchants, keys, plans, customers, subscriptions, processed requests") { db in
            try db.execute(sql: v1)
        }
        CustomerStore.registerHandlingAttempts(in: &migrator)
        migrator.registerMigration("v3: processed requests found through their customer") { db in
            try db.execute(sql: v3)
        }
        migrator.registerMigration("v4: records hold their reply in its stored form") { db in
            try db.execute(sql: v4)
        }
        migrator.registerMigration("v5: no index on subscriptions by customer") { db in
            try db.execute(sql: v5)
        }
        migrator.registerMigration("v6: subscriptions check their status without an IN list") { db in
            try db.execute(sql: v6)
        }
        return migrator
    }

    /// Times are integer milliseconds since 1970 (UTC), the precision of the wire format.
    private static let v1 = """
        CREATE TABLE merchants (
            id TEXT PRIMARY KEY NOT NULL,
            name TEXT NOT NULL,
            created_at INTEGER NOT NULL
        ) STRICT;

        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY NOT NULL,          -- the non-secret key id inside the key
            merchant_id TEXT NOT NULL REFERENCES merchants(id),
            type TEXT NOT NULL CHECK (type IN ('secret', 'publishable')),
            key_hash BLOB NOT NULL,                -- SHA-256 of the whole key; the key itself is never stored
            created_at INTEGER NOT NULL,
            revoked_at INTEGER
        ) STRICT;
        CREATE INDEX api_keys_merchant ON api_keys(merchant_id);

        CREATE TABLE plans (
            merchant_id TEXT NOT NULL REFERENCES merchants(id),
            id TEXT NOT NULL,
            name TEXT NOT NULL,
            description TEXT,
            currency TEXT NOT NULL,
            price INTEGER NOT NULL CHECK (price >= 0),
            billing_cadence TEXT NOT NULL CHECK (billing_cadence IN ('monthly', 'quarterly', 'annually')),
            trial_days INTEGER NOT NULL CHECK (trial_days >= 0),
            is_private INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('available', 'archived')),
            is_default INTEGER NOT NULL,
            available_countries TEXT,              -- comma-separated codes; NULL = everywhere
            available_from INTEGER,
            PRIMARY KEY (merchant_id, id)
        ) STRICT;
        CREATE UNIQUE INDEX plans_one_default ON plans(merchant_id) WHERE is_default = 1;

        CREATE TABLE customers (
            id TEXT PRIMARY KEY NOT NULL,
            merchant_id TEXT NOT NULL REFERENCES merchants(id),
            external_id TEXT NOT NULL,
            name TEXT,
            email TEXT,
            billing_address1 TEXT,
            billing_address2 TEXT,
            billing_city TEXT,
            billing_country TEXT,
            billing_state TEXT,
            billing_zip_code TEXT,
            shipping_address1 TEXT,
            shipping_address2 TEXT,
            shipping_city TEXT,
            shipping_country TEXT,
            shipping_state TEXT,
            shipping_zip_code TEXT,
            quick_books_id TEXT,
            stripe_id TEXT,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            UNIQUE (merchant_id, external_id)
        ) STRICT;

        CREATE TABLE subscriptions (
            id TEXT PRIMARY KEY NOT NULL,
            customer_id TEXT NOT NULL REFERENCES customers(id),
            merchant_id TEXT NOT NULL,
            plan_id TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pendingActivation', 'active', 'ended')),
            is_trial INTEGER NOT NULL,
            start_date INTEGER NOT NULL,
            end_date INTEGER,
            payment_gateway TEXT CHECK (payment_gateway IN ('Stripe', 'QuickBooks')),
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            FOREIGN KEY (merchant_id, plan_id) REFERENCES plans(merchant_id, id)
        ) STRICT;
        CREATE INDEX subscriptions_customer ON subscriptions(customer_id);
        CREATE INDEX subscriptions_plan ON subscriptions(merchant_id, plan_id);

        CREATE TABLE processed_requests (
            idempotency_key TEXT PRIMARY KEY NOT NULL,
            merchant_id TEXT NOT NULL REFERENCES merchants(id),
            fingerprint TEXT NOT NULL,
            customer_id TEXT NOT NULL REFERENCES customers(id),
            reply_type TEXT NOT NULL,
            message_id TEXT NOT NULL,
            reply_body BLOB NOT NULL,              -- the exact bytes published, replayed unchanged
            created_at INTEGER NOT NULL
        ) STRICT;

        -- One row the health check rewrites to prove the file takes writes.
        CREATE TABLE health_checks (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            checked_at INTEGER NOT NULL
        ) STRICT;
        """

    /// The records lose their index on the idempotency key, keyed by a hash and so written at
    /// random pages (one more random B-tree page per customer in every batch's WAL). A record is
    /// found through its customer instead (the (merchant_id, external_id) index its insert touches
    /// anyway), and is unique per customer; keys stay unique, since a key is derived from the
    /// merchant and the external id, which are unique together. The table is rebuilt in place.
    private static let v3 = """
        CREATE TABLE processed_requests_v3 (
            idempotency_key TEXT NOT NULL,
            merchant_id TEXT NOT NULL REFERENCES merchants(id),
            fingerprint TEXT NOT NULL,
            customer_id TEXT NOT NULL UNIQUE REFERENCES customers(id),
            reply_type TEXT NOT NULL,
            message_id TEXT NOT NULL,
            reply_body BLOB NOT NULL,              -- the exact bytes published, replayed unchanged
            created_at INTEGER NOT NULL
        ) STRICT;
        INSERT INTO processed_requests_v3
            SELECT idempotency_key, merchant_id, fingerprint, customer_id, reply_type, message_id, reply_body, created_at
            FROM processed_requests ORDER BY rowid;
        DROP TABLE processed_requests;
        ALTER TABLE processed_requests_v3 RENAME TO processed_requests;
        """

    /// Records written from now on hold their reply in its stored form (`StoredReplyBody`: the
    /// contract's key phrases as tokens), which a worker of an earlier version would replay as it
    /// is. The column is renamed so that such a worker fails on it (an error it retries, never a
    /// reply) instead. Records written before keep the reply itself, which the stored form reads.
    private static let v4 = "ALTER TABLE processed_requests RENAME COLUMN reply_body TO stored_reply"

    /// One B-tree fewer per customer: no query reads subscriptions by their customer, and no
    /// statement deletes a customer or changes its id (the only use SQLite's foreign-key check
    /// would make of it). Measured in BENCHMARKS.md (issue 26).
    private static let v5 = "DROP INDEX IF EXISTS subscriptions_customer"

    /// The same rule on a subscription's status, written as comparisons: SQLite evaluates an `IN`
    /// list of three or more values by building a temporary B-tree of the list, and a `CHECK` does
    /// so on every insert (one per customer with a plan: ~12,000 instructions and two zeroed pages
    /// each, measured in BENCHMARKS.md). Two values or fewer (`payment_gateway`) become
    /// comparisons already. The table is rebuilt in place, its rows and index kept.
    private static let v6 = """
        CREATE TABLE subscriptions_v6 (
            id TEXT PRIMARY KEY NOT NULL,
            customer_id TEXT NOT NULL REFERENCES customers(id),
            merchant_id TEXT NOT NULL,
            plan_id TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status = 'pendingActivation' OR status = 'active' OR status = 'ended'),
            is_trial INTEGER NOT NULL,
            start_date INTEGER NOT NULL,
            end_date INTEGER,
            payment_gateway TEXT CHECK (payment_gateway IN ('Stripe', 'QuickBooks')),
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            FOREIGN KEY (merchant_id, plan_id) REFERENCES plans(merchant_id, id)
        ) STRICT;
        INSERT INTO subscriptions_v6
            SELECT id, customer_id, merchant_id, plan_id, status, is_trial, start_date, end_date, payment_gateway,
                   created_at, updated_at
            FROM subscriptions ORDER BY rowid;
        DROP TABLE subscriptions;
        ALTER TABLE subscriptions_v6 RENAME TO subscriptions;
        CREATE INDEX subscriptions_plan ON subscriptions(merchant_id, plan_id);
        """
}
