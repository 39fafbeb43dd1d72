import CustomerDomain
import Foundation
import GRDB

/// SQL for the `customers` table.
enum CustomerRows {
    /// `billingAddress1` → `billing_address1`: columns follow the contract's field names.
    static func column(_ field: CustomerField) -> String {
        var name = ""
        for character in field.rawValue {
            if character.isUppercase { name += "_" + character.lowercased() } else { name.append(character) }
        }
        return name
    }

    private static let insertSQL: String = {
        let columns = ["id", "merchant_id"] + CustomerField.allCases.map(column) + ["created_at", "updated_at"]
        let placeholders = Array(repeating: "?", count: columns.count).joined(separator: ", ")
        return "INSERT INTO customers (\(columns.joined(separator: ", "))) VALUES (\(placeholders)) "
            + "ON CONFLICT (merchant_id, external_id) DO NOTHING"
    }()

    /// False when the merchant already has a customer with this `externalId`.
    static func insert(_ command: CreateCustomerCommand, id: String, merchantID: String, now: Timestamp, db: Database) throws -> Bool {
        var values: [(any DatabaseValueConvertible)?] = [id, merchantID]
        values += CustomerField.allCases.map { command[$0] }
        values += [now.millisecondsSince1970, now.millisecondsSince1970]
        try db.cachedStatement(sql: insertSQL).execute(arguments: StatementArguments(values))
        return db.changesCount == 1
    }

    static func id(merchantID: String, externalID: String, db: Database) throws -> String? {
        try String.fetchOne(
            db.cachedStatement(sql: "SELECT id FROM customers WHERE merchant_id = ? AND external_id = ?"),
            arguments: [merchantID, externalID])
    }
}

/// SQL for the `subscriptions` table.
enum SubscriptionRows {
    static func insert(_ subscription: Subscription, db: Database) throws {
        let statement = try db.cachedStatement(sql: """
            INSERT INTO subscriptions (id, customer_id, merchant_id, plan_id, status, is_trial, start_date, end_date,
                                       payment_gateway, created_at, updated_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """)
        try statement.execute(arguments: [
            subscription.id, subscription.customerId, subscription.merchantId, subscription.planId,
            subscription.status.rawValue, subscription.isTrial, subscription.startDate.millisecondsSince1970,
            subscription.endDate?.millisecondsSince1970, subscription.paymentGateway?.rawValue,
            subscription.createdAt.millisecondsSince1970, subscription.updatedAt.millisecondsSince1970,
        ])
    }
}

/// The record that makes a command idempotent: its key, what it asked for and the exact reply.
struct ProcessedRequest {
    var idempotencyKey: String
    var merchantID: String
    var fingerprint: String
    var customerID: String
    var replyType: ReplyType
    var messageID: String
    var replyBody: [UInt8]

    static func fetch(_ db: Database, key: String) throws -> ProcessedRequest? {
        let statement = try db.cachedStatement(sql: """
            SELECT merchant_id, fingerprint, customer_id, reply_type, message_id, reply_body
            FROM processed_requests WHERE idempotency_key = ?
            """)
        guard let row = try Row.fetchOne(statement, arguments: [key]) else { return nil }
        let replyType: String = row["reply_type"]
        let body: Data = row["reply_body"]
        return ProcessedRequest(
            idempotencyKey: key, merchantID: row["merchant_id"], fingerprint: row["fingerprint"],
            customerID: row["customer_id"], replyType: ReplyType(rawValue: replyType) ?? .customerCreated,
            messageID: row["message_id"], replyBody: [UInt8](body))
    }

    func insert(_ db: Database, now: Timestamp) throws {
        let statement = try db.cachedStatement(sql: """
            INSERT INTO processed_requests (idempotency_key, merchant_id, fingerprint, customer_id, reply_type,
                                            message_id, reply_body, created_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """)
        try statement.execute(arguments: [
            idempotencyKey, merchantID, fingerprint, customerID, replyType.rawValue, messageID, Data(replyBody),
            now.millisecondsSince1970,
        ])
    }

    /// Only successes are recorded, so a replay never carries an error code.
    var replay: ReplyRecord {
        ReplyRecord(
            type: replyType, idempotencyKey: idempotencyKey, messageID: messageID, body: replyBody, replayed: true,
            errorCode: nil)
    }
}

/// SQL for the `plans` table.
enum PlanRows {
    private static let columns = """
        id, name, description, currency, price, billing_cadence, trial_days, is_private, status, is_default,
        available_countries, available_from
        """

    static func defaultPlan(merchantID: String, db: Database) throws -> Plan? {
        let statement = try db.cachedStatement(
            sql: "SELECT \(columns) FROM plans WHERE merchant_id = ? AND is_default = 1 AND status = 'available'")
        return try Row.fetchOne(statement, arguments: [merchantID]).map(catalogPlan)?.plan
    }

    static func all(merchantID: String, db: Database) throws -> [CatalogPlan] {
        try Row.fetchAll(db, sql: "SELECT \(columns) FROM plans WHERE merchant_id = ? ORDER BY id", arguments: [merchantID])
            .map(catalogPlan)
    }

    /// Inserts the plan or overwrites the merchant's plan with the same id.
    static func upsert(_ catalogPlan: CatalogPlan, merchantID: String, db: Database) throws {
        let plan = catalogPlan.plan
        try db.execute(
            sql: """
                INSERT INTO plans (merchant_id, \(columns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (merchant_id, id) DO UPDATE SET
                    name = excluded.name, description = excluded.description, currency = excluded.currency,
                    price = excluded.price, billing_cadence = excluded.billing_cadence,
                    trial_days = excluded.trial_days, is_private = excluded.is_private, status = excluded.status,
                    is_default = excluded.is_default, available_countries = excluded.available_countries,
                    available_from = excluded.available_from
                """,
            arguments: [
                merchantID, plan.id, plan.name, plan.description, plan.currency, plan.price,
                plan.billingCadence.rawValue, plan.trialDays, plan.isPrivate, plan.status.rawValue,
                catalogPlan.isDefault, plan.availableCountries?.joined(separator: ","),
                plan.availableFrom?.millisecondsSince1970,
            ])
    }

    private static func catalogPlan(_ row: Row) -> CatalogPlan {
        let countries: String? = row["available_countries"]
        let availableFrom: Int64? = row["available_from"]
        let cadence: String = row["billing_cadence"]
        let status: String = row["status"]
        let plan = Plan(
            id: row["id"], name: row["name"], description: row["description"], currency: row["currency"],
            price: row["price"], billingCadence: BillingCadence(rawValue: cadence) ?? .monthly,
            trialDays: row["trial_days"], isPrivate: row["is_private"], status: PlanStatus(rawValue: status) ?? .archived,
            availableCountries: countries.map { $0.isEmpty ? [] : $0.split(separator: ",").map(String.init) },
            availableFrom: availableFrom.map(Timestamp.init(millisecondsSince1970:)))
        return CatalogPlan(plan: plan, isDefault: row["is_default"])
    }
}
