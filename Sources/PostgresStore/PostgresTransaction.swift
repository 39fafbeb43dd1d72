import CreateCustomer
import CustomerDomain
import PostgresNIO

/// The statements of one PostgreSQL transaction: one round trip per kind of statement per batch
/// (arrays with `= ANY`, and `unnest` of one array per column for the writes).
public struct PostgresTransaction: Sendable {
    let connection: PostgresConnection
    let logger: Logger

    @discardableResult
    func run(_ query: PostgresQuery) async throws -> PostgresRowSequence {
        try await connection.query(query, logger: logger)
    }

    func single(_ query: PostgresQuery) async throws -> Int {
        for try await value in try await run(query).decode(Int.self) { return value }
        return 0
    }

    /// The most parameters one statement may carry (the protocol counts them in 16 bits).
    static let maximumParameters = Int(UInt16.max)

    /// `INSERT INTO table (columns) VALUES (…), (…) suffix` with one row of binds per element, in
    /// order: one statement for a batch of any usual size, more only when the rows would carry
    /// more parameters than one statement may. `results` sees each statement's rows.
    func insertRows<Row>(_ table: String, _ columns: [String], _ rows: [Row], suffix: String = "",
                         bind: (inout PostgresBindings, Row) -> Void,
                         results: (PostgresRowSequence) async throws -> Void = { _ in }) async throws {
        let rowsPerStatement = max(1, Self.maximumParameters / max(1, columns.count))
        for start in stride(from: 0, to: rows.count, by: rowsPerStatement) {
            let chunk = rows[start..<min(rows.count, start + rowsPerStatement)]
            var binds = PostgresBindings(capacity: chunk.count * columns.count)
            var sql = "INSERT INTO \(table) (\(columns.joined(separator: ", "))) VALUES "
            var parameter = 0
            for (index, row) in chunk.enumerated() {
                sql += index == 0 ? "(" : ", ("
                sql += (0..<columns.count).map { _ in parameter += 1; return "$\(parameter)" }.joined(separator: ", ")
                sql += ")"
                bind(&binds, row)
            }
            try await results(try await run(PostgresQuery(unsafeSQL: sql + suffix, binds: binds)))
        }
    }

    // MARK: Create customer (driven by `CreateCustomerCore`, see `PostgresStore.createCustomers`)

    /// One round trip per read.
    func read(_ read: CreateCustomerCore.Read) async throws -> CreateCustomerCore.Rows {
        switch read {
        case .apiKeys(let ids): .apiKeys(try await apiKeys(ids: ids))
        case .processedRequests(let lookups): .processedRequests(try await processedRequests(lookups.map(\.customer)))
        case .defaultPlans(let merchantIDs): .defaultPlans(try await defaultPlans(merchantIDs: merchantIDs))
        case .customerIDs(let references): .customerIDs(try await customerIDs(references))
        }
    }

    public func apiKeys(ids: [String]) async throws -> [StoredAPIKey] {
        let rows = try await run("""
            SELECT id, merchant_id, type, key_hash, revoked_at IS NOT NULL FROM api_keys WHERE id = ANY(\(ids))
            """)
        var keys: [StoredAPIKey] = []
        for try await (id, merchantID, type, hash, revoked) in rows.decode((String, String, String, ByteBuffer, Bool).self) {
            let keyType = try UndecodableStoredValue.decode(type, as: APIKeyType.self, table: "api_keys", column: "type")
            keys.append(StoredAPIKey(id: id, merchantID: merchantID, type: keyType, keyHash: Array(hash.readableBytesView), isRevoked: revoked))
        }
        return keys
    }

    /// Found through their customer, as in the SQLite store (migration 4): per command, the
    /// customers' (merchant, external id) index, then the records' unique customer index. A
    /// lateral subquery with `LIMIT 1` (both indexes are unique) keeps the plan to those probes: as
    /// a plain join, the planner hashed the batch and scanned every customer for each batch while
    /// the tables were not yet analysed (224 scans of 2.96 million rows in a 30,000-command run).
    func processedRequests(_ customers: [CustomerReference]) async throws -> [ProcessedRequest] {
        let rows = try await run("""
            SELECT x.* FROM unnest(\(customers.map(\.merchantID))::text[], \(customers.map(\.externalID))::text[]) AS r(merchant_id, external_id)
            CROSS JOIN LATERAL (
                SELECT p.idempotency_key, p.merchant_id, p.fingerprint, p.customer_id, p.reply_type, p.message_id, p.stored_reply
                FROM customers c JOIN processed_requests p ON p.customer_id = c.id
                WHERE c.merchant_id = r.merchant_id AND c.external_id = r.external_id LIMIT 1
            ) AS x
            """)
        var records: [ProcessedRequest] = []
        for try await (key, merchantID, fingerprint, customerID, type, messageID, body)
            in rows.decode((String, String, String, String, String, String, ByteBuffer).self) {
            let replyType = try UndecodableStoredValue.decode(type, as: ReplyType.self, table: "processed_requests", column: "reply_type")
            records.append(ProcessedRequest(
                idempotencyKey: key, merchantID: merchantID, fingerprint: fingerprint, customerID: customerID,
                replyType: replyType, messageID: messageID, replyBody: try StoredReplyBody.decode(Array(body.readableBytesView))))
        }
        return records
    }

    /// Each merchant's default plan, whatever its status: the rules decide what a plan allows.
    func defaultPlans(merchantIDs: [String]) async throws -> [String: Plan] {
        var plans: [String: Plan] = [:]
        for (merchantID, plan) in try await planRows("merchant_id = ANY(\(merchantIDs)) AND is_default") {
            plans[merchantID] = plan.plan
        }
        return plans
    }

    func customerIDs(_ references: [CustomerReference]) async throws -> [CustomerReference: String] {
        let rows = try await run("""
            SELECT r.merchant_id, r.external_id, c.id
            FROM unnest(\(references.map(\.merchantID))::text[], \(references.map(\.externalID))::text[]) AS r(merchant_id, external_id)
            CROSS JOIN LATERAL (
                SELECT id FROM customers WHERE merchant_id = r.merchant_id AND external_id = r.external_id LIMIT 1
            ) AS c
            """)
        var ids: [CustomerReference: String] = [:]
        for try await (merchantID, externalID, id) in rows.decode((String, String, String).self) {
            ids[CustomerReference(merchantID: merchantID, externalID: externalID)] = id
        }
        return ids
    }

    /// The batch's writes in one statement (one round trip) whose text never changes: each column
    /// is one array parameter, unnested into rows, so the server parses and plans a statement of
    /// 40 parameters instead of one with 40 per customer (a batch of 100 took it longer to plan
    /// than to run). The customers are inserted unless their merchant has their `externalId`
    /// (waiting for a transaction inserting the same row), and only the inserted ones get their
    /// subscription and record, through data-modifying CTEs (the foreign keys are checked at the
    /// end of the statement). Rows in the order given.
    func write(_ writes: CreateCustomerCore.Writes) async throws -> Set<String> {
        let creations = writes.creations
        let customers = creations.map(\.customer)
        let subscriptions = creations.compactMap(\.subscription)
        let records = creations.map(\.record)
        var binds = PostgresBindings(capacity: Self.writeParameters)
        binds.append(customers.map(\.id))
        binds.append(customers.map(\.merchantID))
        let attributes = customers.map(\.attributes)
        for field in CustomerField.allCases { binds.append(CommandFieldColumn(commands: attributes, field: field)) }
        binds.append(customers.map(\.createdAt.millisecondsSince1970))
        binds.append(customers.map(\.createdAt.millisecondsSince1970))
        binds.append(subscriptions.map(\.id))
        binds.append(subscriptions.map(\.customerId))
        binds.append(subscriptions.map(\.merchantId))
        binds.append(subscriptions.map(\.planId))
        binds.append(subscriptions.map(\.status.rawValue))
        binds.append(subscriptions.map(\.isTrial))
        binds.append(subscriptions.map(\.startDate.millisecondsSince1970))
        binds.append(NullableArray(subscriptions.map { $0.endDate?.millisecondsSince1970 }))
        binds.append(NullableArray(subscriptions.map { $0.paymentGateway?.rawValue }))
        binds.append(subscriptions.map(\.createdAt.millisecondsSince1970))
        binds.append(subscriptions.map(\.updatedAt.millisecondsSince1970))
        binds.append(records.map(\.idempotencyKey))
        binds.append(records.map(\.merchantID))
        binds.append(records.map(\.fingerprint))
        binds.append(records.map(\.customerID))
        binds.append(records.map(\.replyType.rawValue))
        binds.append(records.map(\.messageID))
        binds.append(creations.map { ByteBuffer(bytes: $0.storedReply) })
        binds.append(Array(repeating: writes.recordedAt.millisecondsSince1970, count: records.count))
        var inserted = Set<String>()
        for try await id in try await run(PostgresQuery(unsafeSQL: Self.writeSQL, binds: binds)).decode(String.self) { inserted.insert(id) }
        return inserted
    }

    private static let customerColumns = [("id", "text"), ("merchant_id", "text")]
        + CustomerField.allCases.map { ($0.columnName, "text") } + [("created_at", "bigint"), ("updated_at", "bigint")]
    private static let subscriptionColumns = [
        ("id", "text"), ("customer_id", "text"), ("merchant_id", "text"), ("plan_id", "text"), ("status", "text"),
        ("is_trial", "boolean"), ("start_date", "bigint"), ("end_date", "bigint"), ("payment_gateway", "text"),
        ("created_at", "bigint"), ("updated_at", "bigint"),
    ]
    private static let recordColumns = [
        ("idempotency_key", "text"), ("merchant_id", "text"), ("fingerprint", "text"), ("customer_id", "text"),
        ("reply_type", "text"), ("message_id", "text"), ("stored_reply", "bytea"), ("created_at", "bigint"),
    ]
    private static let writeParameters = customerColumns.count + subscriptionColumns.count + recordColumns.count

    /// `write`'s statement: the parameters are the columns of `customerColumns`, then of
    /// `subscriptionColumns`, then of `recordColumns`, each an array with one element per row.
    static let writeSQL: String = {
        var parameter = 0
        func unnest(_ columns: [(String, String)]) -> String {
            "unnest(" + columns.map { column in parameter += 1; return "$\(parameter)::\(column.1)[]" }.joined(separator: ", ")
                + ") AS v(" + columns.map(\.0).joined(separator: ", ") + ")"
        }
        func names(_ columns: [(String, String)]) -> String { columns.map(\.0).joined(separator: ", ") }
        let customers = "INSERT INTO customers (\(names(customerColumns))) SELECT * FROM \(unnest(customerColumns)) "
            + "ON CONFLICT (merchant_id, external_id) DO NOTHING RETURNING id"
        let subscriptions = "INSERT INTO subscriptions (\(names(subscriptionColumns))) SELECT * FROM \(unnest(subscriptionColumns)) "
            + "WHERE v.customer_id IN (SELECT id FROM c)"
        let records = "INSERT INTO processed_requests (\(names(recordColumns))) SELECT * FROM \(unnest(recordColumns)) "
            + "WHERE v.customer_id IN (SELECT id FROM c)"
        return "WITH c AS (\(customers)), s AS (\(subscriptions)), r AS (\(records)) SELECT id FROM c"
    }()

    // MARK: Handling attempts

    func beginAttempt(key: String, now: Timestamp, since: Timestamp) async throws -> Int {
        let (millis, cutoff) = (now.millisecondsSince1970, since.millisecondsSince1970)
        // A marker older than the cutoff is expired: it counts again from one.
        let earlier = try await single("""
            INSERT INTO handling_attempts AS a (key, attempts, first_started_at, last_started_at) VALUES (\(key), 1, \(millis), \(millis))
            ON CONFLICT (key) DO UPDATE SET
                attempts = CASE WHEN a.last_started_at < \(cutoff) THEN 1 ELSE a.attempts + 1 END,
                first_started_at = CASE WHEN a.last_started_at < \(cutoff) THEN excluded.first_started_at ELSE a.first_started_at END,
                last_started_at = excluded.last_started_at
            RETURNING a.attempts - 1
            """)
        try await run("DELETE FROM handling_attempts WHERE last_started_at < \(cutoff)")
        return earlier
    }

    func deleteAttempts(keys: [String]) async throws {
        try await run("DELETE FROM handling_attempts WHERE key = ANY(\(keys))")
    }

    // MARK: Administration

    /// An admin operation's reads: one round trip per kind of row it asks for.
    func read(_ reads: AdminReads) async throws -> AdminRows {
        var rows = AdminRows()
        if !reads.apiKeyIDs.isEmpty { rows.apiKeys = try await apiKeys(ids: reads.apiKeyIDs) }
        if let merchant = reads.merchant { rows.merchantExists = try await single("SELECT count(*) FROM merchants WHERE id = \(merchant)") > 0 }
        if let merchant = reads.plansOf {
            rows.plans = try await plans(merchantID: merchant)
            rows.referencedPlanIDs = try await referencedPlanIDs(merchantID: merchant)
        }
        return rows
    }

    /// One of an admin operation's writes: one round trip (a catalog: one per kind of change).
    func apply(_ change: AdminWrite) async throws {
        switch change {
        case .insertMerchant(let id, let name, let now):
            try await run("INSERT INTO merchants (id, name, created_at) VALUES (\(id), \(name), \(now.millisecondsSince1970))")
        case .insertAPIKey(let key, let now):
            try await run("""
                INSERT INTO api_keys (id, merchant_id, type, key_hash, created_at)
                VALUES (\(key.id), \(key.merchantID), \(key.type.rawValue), \(ByteBuffer(bytes: key.keyHash)), \(now.millisecondsSince1970))
                """)
        case .revokeAPIKey(let id, let now):
            try await run("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, \(now.millisecondsSince1970)) WHERE id = \(id)")
        case .savePlans(let merchantID, let upserting, let archiving, let deleting):
            try await savePlans(merchantID: merchantID, upserting: upserting, archiving: archiving, deleting: deleting)
        }
    }

    func plans(merchantID: String) async throws -> [CatalogPlan] {
        try await planRows("merchant_id = \(merchantID) ORDER BY id").map(\.1)
    }

    func referencedPlanIDs(merchantID: String) async throws -> Set<String> {
        var ids = Set<String>()
        for try await id in try await run("SELECT DISTINCT plan_id FROM subscriptions WHERE merchant_id = \(merchantID)").decode(String.self) {
            ids.insert(id)
        }
        return ids
    }

    private static let planColumns = ["id", "name", "description", "currency", "price", "billing_cadence", "trial_days",
                                      "is_private", "status", "is_default", "available_countries", "available_from"]

    func savePlans(merchantID: String, upserting: [CatalogPlan], archiving: [String], deleting: [String]) async throws {
        // Clear the old default first: at most one default per merchant is enforced by an index.
        try await run("UPDATE plans SET is_default = false WHERE merchant_id = \(merchantID)")
        if !upserting.isEmpty {
            let updates = Self.planColumns.dropFirst().map { "\($0) = excluded.\($0)" }.joined(separator: ", ")
            try await insertRows("plans", ["merchant_id"] + Self.planColumns, upserting,
                                 suffix: " ON CONFLICT (merchant_id, id) DO UPDATE SET \(updates)") { binds, catalogPlan in
                let plan = catalogPlan.plan
                binds.append(merchantID)
                binds.append(plan.id)
                binds.append(plan.name)
                binds.append(plan.description)
                binds.append(plan.currency)
                binds.append(Int64(plan.price))
                binds.append(plan.billingCadence.rawValue)
                binds.append(Int64(plan.trialDays))
                binds.append(plan.isPrivate)
                binds.append(plan.status.rawValue)
                binds.append(catalogPlan.isDefault)
                binds.append(plan.availableCountries?.joined(separator: ","))
                binds.append(plan.availableFrom?.millisecondsSince1970)
            }
        }
        if !archiving.isEmpty {
            try await run("UPDATE plans SET status = 'archived' WHERE merchant_id = \(merchantID) AND id = ANY(\(archiving))")
        }
        if !deleting.isEmpty {
            try await run("DELETE FROM plans WHERE merchant_id = \(merchantID) AND id = ANY(\(deleting))")
        }
    }

    /// Plans with their merchant id, selected by `condition` (an SQL fragment with binds).
    private func planRows(_ condition: PostgresQuery) async throws -> [(String, CatalogPlan)] {
        var query = condition
        query.sql = "SELECT merchant_id, \(Self.planColumns.joined(separator: ", ")) FROM plans WHERE " + condition.sql
        var plans: [(String, CatalogPlan)] = []
        let rows = try await run(query).decode(
            (String, String, String, String?, String, Int, String, Int, Bool, String, Bool, String?, Int64?).self)
        for try await (merchantID, id, name, description, currency, price, cadence, trialDays, isPrivate, status, isDefault,
                       countries, availableFrom) in rows {
            let billingCadence = try UndecodableStoredValue.decode(cadence, as: BillingCadence.self, table: "plans", column: "billing_cadence")
            let planStatus = try UndecodableStoredValue.decode(status, as: PlanStatus.self, table: "plans", column: "status")
            let plan = Plan(
                id: id, name: name, description: description, currency: currency, price: price,
                billingCadence: billingCadence, trialDays: trialDays, isPrivate: isPrivate,
                status: planStatus,
                availableCountries: countries.map { $0.isEmpty ? [] : $0.split(separator: ",").map(String.init) },
                availableFrom: availableFrom.map(Timestamp.init(millisecondsSince1970:)))
            plans.append((merchantID, CatalogPlan(plan: plan, isDefault: isDefault)))
        }
        return plans
    }
}

// MARK: - Copying from another store

extension PostgresStore {
    /// Columns that are booleans here and integers in SQLite.
    private static let booleanColumns: Set<String> = ["is_private", "is_default", "is_trial"]

    /// Inserts rows copied from another store, skipping rows that are already here (so a copy
    /// can be run again after an interruption). Returns how many rows were inserted.
    public func importRows(_ table: CopiedTable, _ chunk: TableChunk) async throws -> Int {
        guard !chunk.rows.isEmpty else { return 0 }
        return try await transaction("copy \(table.rawValue)") { transaction in
            var inserted = 0
            try await transaction.insertRows(table.rawValue, chunk.columns, chunk.rows, suffix: " ON CONFLICT DO NOTHING RETURNING 1") { binds, row in
                for (column, cell) in zip(chunk.columns, row) {
                    switch cell {
                    case .null: binds.appendNull()
                    case .integer(let value) where Self.booleanColumns.contains(column): binds.append(value != 0)
                    case .integer(let value): binds.append(value)
                    case .text(let value): binds.append(value)
                    case .blob(let value): binds.append(ByteBuffer(bytes: value))
                    }
                }
            } results: { rows in
                for try await _ in rows { inserted += 1 }
            }
            return inserted
        }
    }
}
