import CreateCustomer
import CustomerDomain
import Foundation
import GRDB

/// The create-customer statements, run synchronously inside one GRDB write (see
/// `CustomerStore.createCustomers`). The records' lookups and the `Writes` of `CreateCustomerCore`
/// are a few statements per batch (`RowChunks`); the other reads, one statement run per value.
enum CreateCustomerStatements {
    static func read(_ read: CreateCustomerCore.Read, _ db: Database) throws -> CreateCustomerCore.Rows {
        switch read {
        case .apiKeys(let ids): .apiKeys(try apiKeys(ids: ids, db))
        case .processedRequests(let lookups): .processedRequests(try processedRequests(lookups, db))
        case .defaultPlans(let merchantIDs): .defaultPlans(try defaultPlans(merchantIDs: merchantIDs, db))
        case .customerIDs(let references): .customerIDs(try customerIDs(references, db))
        }
    }

    static func apiKeys(ids: [String], _ db: Database) throws -> [StoredAPIKey] {
        let statement = try db.cachedStatement(sql: "SELECT id, merchant_id, type, key_hash, revoked_at FROM api_keys WHERE id = ?")
        return try ids.compactMap { id in
            try Row.fetchOne(statement, arguments: [id]).map { row in
                let type: String = row["type"]
                let keyType = try UndecodableStoredValue.decode(type, as: APIKeyType.self, table: "api_keys", column: "type")
                let hash: Data = row["key_hash"]
                return StoredAPIKey(id: row["id"], merchantID: row["merchant_id"], type: keyType,
                                    keyHash: [UInt8](hash), isRevoked: (row["revoked_at"] as Int64?) != nil)
            }
        }
    }

    /// The records of one merchant's external ids, for each size of `RowChunks.sizes`: `?1` the
    /// merchant, `?2…` the external ids.
    static let recordsOfExternalIDs: [String] = RowChunks.sizes.map { count in
        """
        SELECT p.idempotency_key, p.merchant_id, p.fingerprint, p.customer_id, p.reply_type, p.message_id, p.stored_reply
        FROM customers c JOIN processed_requests p ON p.customer_id = c.id
        WHERE c.merchant_id = ?1 AND c.external_id IN (\((2...(count + 1)).map { "?\($0)" }.joined(separator: ", ")))
        """
    }

    /// Found through their customer (see migration v3): each lookup descends the customers'
    /// (merchant, external id) index, the one index a new customer's insert touches at random
    /// anyway. A merchant's lookups go in chunks of `RowChunks.sizes`, one statement each, stepped
    /// directly (`DirectStatement`): a statement per lookup cost its start and end each time, as
    /// the inserts did. Rows come in the index's order; the core matches them by key.
    static func processedRequests(_ lookups: [RecordLookup], _ db: Database) throws -> [ProcessedRequest] {
        // Each merchant's external ids, merchants in the order they first appear. A batch's
        // lookups are mostly one merchant's: the last group is tried before the table.
        var groups: [(merchantID: String, externalIDs: [String])] = []
        var groupOfMerchant: [String: Int] = [:]
        for lookup in lookups {
            let (merchantID, externalID) = (lookup.customer.merchantID, lookup.customer.externalID)
            if let last = groups.indices.last, groups[last].merchantID == merchantID {
                groups[last].externalIDs.append(externalID)
            } else if let group = groupOfMerchant[merchantID] {
                groups[group].externalIDs.append(externalID)
            } else {
                groupOfMerchant[merchantID] = groups.count
                groups.append((merchantID, [externalID]))
            }
        }
        var records: [ProcessedRequest] = []
        for (merchantID, ids) in groups {
            for chunk in RowChunks.of(ids.indices) {
                let statement = try DirectStatement(db, sql: recordsOfExternalIDs[RowChunks.position(ofSize: chunk.count)])
                try statement.bind(merchantID, at: 1)
                for (offset, index) in chunk.enumerated() {
                    try statement.bind(ids[index], at: Int32(offset + 2))
                }
                try statement.forEachRow { row in
                    let replyType = try UndecodableStoredValue.decode(
                        row.string(4), as: ReplyType.self, table: "processed_requests", column: "reply_type")
                    records.append(ProcessedRequest(
                        idempotencyKey: row.string(0), merchantID: row.string(1), fingerprint: row.string(2),
                        customerID: row.string(3), replyType: replyType, messageID: row.string(5),
                        replyBody: try StoredReplyBody.decode(row.bytes(6))))
                }
            }
        }
        return records
    }

    /// Each merchant's default plan, whatever its status: the rules decide what a plan allows.
    static func defaultPlans(merchantIDs: [String], _ db: Database) throws -> [String: Plan] {
        let statement = try db.cachedStatement(sql: "SELECT \(PlanColumns.list) FROM plans WHERE merchant_id = ? AND is_default = 1")
        var plans: [String: Plan] = [:]
        for merchantID in merchantIDs {
            plans[merchantID] = try Row.fetchOne(statement, arguments: [merchantID]).map(PlanColumns.catalogPlan)?.plan
        }
        return plans
    }

    /// A customer's 21 columns from 20 parameters: `updated_at` takes `created_at`'s.
    static let insertCustomers = MultiRowInsert(
        head: "INSERT INTO customers (" + (["id", "merchant_id"] + CustomerField.allCases.map(\.columnName) + ["created_at", "updated_at"])
            .joined(separator: ", ") + ")",
        parameterOfEachColumn: Array(1...(2 + CustomerField.allCases.count + 1)) + [2 + CustomerField.allCases.count + 1],
        tail: "ON CONFLICT (merchant_id, external_id) DO NOTHING")

    static let insertSubscriptions = MultiRowInsert(
        head: """
            INSERT INTO subscriptions (id, customer_id, merchant_id, plan_id, status, is_trial, start_date, end_date,
                                       payment_gateway, created_at, updated_at)
            """,
        parameterOfEachColumn: Array(1...11), tail: "")

    static let insertRecords = MultiRowInsert(
        head: """
            INSERT INTO processed_requests (idempotency_key, merchant_id, fingerprint, customer_id, reply_type,
                                            message_id, stored_reply, created_at)
            """,
        parameterOfEachColumn: Array(1...8), tail: "")

    /// Inserts each customer unless its merchant has its `externalId`, and only then its
    /// subscription and record; returns the ids of the customers inserted. Each table's rows go
    /// in a few multi-row statements (`MultiRowInsert`), each bound value by value from the rows
    /// and stepped directly (`DirectStatement`): a statement's start and end (opening a cursor per
    /// B-tree, freeing its registers) cost about as much as a row, and now come once per chunk.
    static func write(_ writes: CreateCustomerCore.Writes, _ db: Database) throws -> Set<String> {
        let creations = writes.creations
        var insertedIndices: [Int] = []
        insertedIndices.reserveCapacity(creations.count)
        try insertCustomers.run(rows: creations.count, db, bind: { customers, row, base in
            let customer = creations[row].customer
            try customers.bind(customer.id, at: base)
            try customers.bind(customer.merchantID, at: base + 1)
            var parameter = base + 2
            for field in CustomerField.allCases {
                try customer.attributes.withUTF8(field) { try customers.bind(utf8: $0, at: parameter) }
                parameter += 1
            }
            try customers.bind(customer.createdAt.millisecondsSince1970, at: parameter)
        }, afterEachStatement: { chunk in
            // A customer is skipped only when its merchant already has its external id: another
            // writer won the race (see `CreateCustomerCore.wrote`). Rare, so only then is each
            // customer of the chunk looked up, by the id minted for it.
            let allInserted = db.changesCount == chunk.count
            for row in chunk {
                let id = creations[row].customer.id
                guard try allInserted || customerExists(id: id, db) else { continue }
                insertedIndices.append(row)
            }
        })

        let subscribed = insertedIndices.filter { creations[$0].subscription != nil }
        try insertSubscriptions.run(rows: subscribed.count, db) { subscriptions, row, base in
            guard let subscription = creations[subscribed[row]].subscription else { return }
            try subscriptions.bind(subscription.id, at: base)
            try subscriptions.bind(subscription.customerId, at: base + 1)
            try subscriptions.bind(subscription.merchantId, at: base + 2)
            try subscriptions.bind(subscription.planId, at: base + 3)
            try subscriptions.bind(subscription.status.rawValue, at: base + 4)
            try subscriptions.bind(subscription.isTrial, at: base + 5)
            try subscriptions.bind(subscription.startDate.millisecondsSince1970, at: base + 6)
            try subscriptions.bind(subscription.endDate?.millisecondsSince1970, at: base + 7)
            try subscriptions.bind(subscription.paymentGateway?.rawValue, at: base + 8)
            try subscriptions.bind(subscription.createdAt.millisecondsSince1970, at: base + 9)
            try subscriptions.bind(subscription.updatedAt.millisecondsSince1970, at: base + 10)
        }

        let recordedAt = writes.recordedAt.millisecondsSince1970
        try insertRecords.run(rows: insertedIndices.count, db) { records, row, base in
            let creation = creations[insertedIndices[row]]
            try records.bind(creation.record.idempotencyKey, at: base)
            try records.bind(creation.record.merchantID, at: base + 1)
            try records.bind(creation.record.fingerprint, at: base + 2)
            try records.bind(creation.record.customerID, at: base + 3)
            try records.bind(creation.record.replyType.rawValue, at: base + 4)
            try records.bind(creation.record.messageID, at: base + 5)
            try records.bind(blob: creation.storedReply, at: base + 6)
            try records.bind(recordedAt, at: base + 7)
        }
        return Set(insertedIndices.lazy.map { creations[$0].customer.id })
    }

    private static func customerExists(id: String, _ db: Database) throws -> Bool {
        let statement = try DirectStatement(db, sql: "SELECT 1 FROM customers WHERE id = ?")
        try statement.bind(id, at: 1)
        return try statement.first { _ in true } ?? false
    }

    static func customerIDs(_ references: [CustomerReference], _ db: Database) throws -> [CustomerReference: String] {
        let statement = try DirectStatement(db, sql: "SELECT id FROM customers WHERE merchant_id = ? AND external_id = ?")
        var ids: [CustomerReference: String] = [:]
        for reference in references {
            try statement.bind(reference.merchantID, at: 1)
            try statement.bind(reference.externalID, at: 2)
            ids[reference] = try statement.first { $0.string(0) }
        }
        return ids
    }
}

extension CustomerStore {
    public func createCustomers(_ core: CreateCustomerCore, finishingAttempts: [String]) async throws -> [CommandOutcome] {
        try await write("handle commands") { db in
            // First: the markers' rows are this transaction's from now on (see `HandlingAttempt`).
            for key in finishingAttempts { try HandlingAttemptRows.delete(key: key, db) }
            var core = core
            return try core.run(read: { try CreateCustomerStatements.read($0, db) },
                                write: { try CreateCustomerStatements.write($0, db) })
        }
    }
}

extension MultiRowInsert {
    /// Inserts rows `0..<rows` in chunks of `sizes`, one statement each: `bind` binds row `row`'s
    /// values from parameter `base` on; `afterEachStatement` runs after each chunk's step, with
    /// the rows it held (`db.changesCount` is then that statement's).
    func run(rows: Int, _ db: Database, bind: (_ statement: DirectStatement, _ row: Int, _ base: Int32) throws -> Void,
             afterEachStatement: (Range<Int>) throws -> Void = { _ in }) throws {
        for chunk in RowChunks.of(0..<rows) {
            let statement = try DirectStatement(db, sql: sql(rows: chunk.count))
            for (offset, row) in chunk.enumerated() {
                try bind(statement, row, firstParameter(ofRow: offset))
            }
            try statement.execute()
            try afterEachStatement(chunk)
        }
    }
}

/// The statements of the admin operations (`AdminOperation`), run synchronously inside one
/// GRDB write transaction (`CustomerStore.administer`).
enum AdminStatements {
    static func read(_ reads: AdminReads, _ db: Database) throws -> AdminRows {
        var rows = AdminRows()
        if !reads.apiKeyIDs.isEmpty { rows.apiKeys = try CreateCustomerStatements.apiKeys(ids: reads.apiKeyIDs, db) }
        if let merchant = reads.merchant {
            rows.merchantExists = try Bool.fetchOne(db, sql: "SELECT 1 FROM merchants WHERE id = ?", arguments: [merchant]) != nil
        }
        if let merchant = reads.plansOf {
            rows.plans = try Row.fetchAll(db, sql: "SELECT \(PlanColumns.list) FROM plans WHERE merchant_id = ? ORDER BY id", arguments: [merchant])
                .map { try PlanColumns.catalogPlan($0) }
            rows.referencedPlanIDs = try String.fetchSet(
                db, sql: "SELECT DISTINCT plan_id FROM subscriptions WHERE merchant_id = ?", arguments: [merchant])
        }
        return rows
    }

    static func apply(_ change: AdminWrite, _ db: Database) throws {
        switch change {
        case .insertMerchant(let id, let name, let now):
            try db.execute(sql: "INSERT INTO merchants (id, name, created_at) VALUES (?, ?, ?)",
                           arguments: [id, name, now.millisecondsSince1970])
        case .insertAPIKey(let key, let now):
            try db.execute(
                sql: "INSERT INTO api_keys (id, merchant_id, type, key_hash, created_at) VALUES (?, ?, ?, ?, ?)",
                arguments: [key.id, key.merchantID, key.type.rawValue, Data(key.keyHash), now.millisecondsSince1970])
        case .revokeAPIKey(let id, let now):
            try db.execute(sql: "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
                           arguments: [now.millisecondsSince1970, id])
        case .savePlans(let merchantID, let upserting, let archiving, let deleting):
            // Clear the old default first: at most one default per merchant is enforced by an index.
            try db.execute(sql: "UPDATE plans SET is_default = 0 WHERE merchant_id = ?", arguments: [merchantID])
            for catalogPlan in upserting {
                let plan = catalogPlan.plan
                try db.execute(
                    sql: """
                        INSERT INTO plans (merchant_id, \(PlanColumns.list)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                        ON CONFLICT (merchant_id, id) DO UPDATE SET \(PlanColumns.updateFromExcluded)
                        """,
                    arguments: [
                        merchantID, plan.id, plan.name, plan.description, plan.currency, plan.price,
                        plan.billingCadence.rawValue, plan.trialDays, plan.isPrivate, plan.status.rawValue,
                        catalogPlan.isDefault, plan.availableCountries.map(PlanColumns.countries),
                        plan.availableFrom?.millisecondsSince1970,
                    ])
            }
            for id in archiving {
                try db.execute(sql: "UPDATE plans SET status = 'archived' WHERE merchant_id = ? AND id = ?", arguments: [merchantID, id])
            }
            for id in deleting {
                try db.execute(sql: "DELETE FROM plans WHERE merchant_id = ? AND id = ?", arguments: [merchantID, id])
            }
        }
    }
}

/// Columns of the `plans` table and their mapping to `CatalogPlan`.
enum PlanColumns {
    static let list = """
        id, name, description, currency, price, billing_cadence, trial_days, is_private, status, is_default,
        available_countries, available_from
        """

    static let updateFromExcluded = """
        name = excluded.name, description = excluded.description, currency = excluded.currency,
        price = excluded.price, billing_cadence = excluded.billing_cadence,
        trial_days = excluded.trial_days, is_private = excluded.is_private, status = excluded.status,
        is_default = excluded.is_default, available_countries = excluded.available_countries,
        available_from = excluded.available_from
        """

    /// Comma-separated codes; NULL = everywhere.
    static func countries(_ codes: [String]) -> String { codes.joined(separator: ",") }

    static func catalogPlan(_ row: Row) throws -> CatalogPlan {
        let countries: String? = row["available_countries"]
        let availableFrom: Int64? = row["available_from"]
        let cadence: String = row["billing_cadence"]
        let status: String = row["status"]
        let billingCadence = try UndecodableStoredValue.decode(cadence, as: BillingCadence.self, table: "plans", column: "billing_cadence")
        let planStatus = try UndecodableStoredValue.decode(status, as: PlanStatus.self, table: "plans", column: "status")
        let plan = Plan(
            id: row["id"], name: row["name"], description: row["description"], currency: row["currency"],
            price: row["price"], billingCadence: billingCadence,
            trialDays: row["trial_days"], isPrivate: row["is_private"], status: planStatus,
            availableCountries: countries.map { $0.isEmpty ? [] : $0.split(separator: ",").map(String.init) },
            availableFrom: availableFrom.map(Timestamp.init(millisecondsSince1970:)))
        return CatalogPlan(plan: plan, isDefault: row["is_default"])
    }
}
