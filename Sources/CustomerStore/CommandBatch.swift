import CustomerDomain
import GRDB

/// Handles the commands of one batch inside its write transaction. Authentication results and
/// default plans are cached for the batch: the write lock keeps them from changing under it.
struct CommandBatch {
    let db: Database
    let now: Timestamp
    private var authentications: [String: Authentication] = [:]
    private var defaultPlans: [String: Plan?] = [:]

    init(db: Database, now: Timestamp) {
        self.db = db
        self.now = now
    }

    mutating func handle(
        _ command: IncomingCommand, _ parsed: Result<CreateCustomerCommand, CommandRejection>
    ) throws -> ReplyRecord {
        let merchantID: String
        switch try authenticate(command.apiKey) {
        case .merchant(let id): merchantID = id
        case .unauthorized(let reason): return failure(reason.rejection, key: nil, body: command.body)
        case .forbidden: return failure(.publishableAPIKey, key: nil, body: command.body)
        }
        let customer: CreateCustomerCommand
        switch parsed {
        case .success(let valid):
            customer = valid
        case .failure(let rejection):
            let key = rejection.validExternalId.map { idempotencyKey(merchantID: merchantID, externalID: $0) }
            return failure(rejection, key: key, body: command.body)
        }
        return try create(customer, merchantID: merchantID, body: command.body)
    }

    /// A command seen before replays its stored reply when it is the same command, and is a
    /// conflict when it differs. Checking the processed record first makes a duplicate inside this
    /// batch behave exactly like one from an earlier batch.
    private mutating func create(_ command: CreateCustomerCommand, merchantID: String, body: [UInt8]) throws -> ReplyRecord {
        let key = idempotencyKey(merchantID: merchantID, externalID: command.externalId)
        let fingerprint = command.fingerprint
        if let processed = try ProcessedRequest.fetch(db, key: key) {
            guard processed.fingerprint == fingerprint else {
                return conflict(command, key: key, existingCustomerID: processed.customerID, body: body)
            }
            return processed.replay
        }
        let customerID = newIdentifier(now: now)
        guard try CustomerRows.insert(command, id: customerID, merchantID: merchantID, now: now, db: db) else {
            // The unique constraint caught a customer without a processed record (written outside
            // this code path). It is the final guard: report it, never overwrite it.
            let existing = try CustomerRows.id(merchantID: merchantID, externalID: command.externalId, db: db)
            return conflict(command, key: key, existingCustomerID: existing, body: body)
        }
        let decision = try DefaultPlanRules.evaluate(
            defaultPlan: try defaultPlan(merchantID), for: command, isEligibleForTrial: true, now: now.date)
        var subscriptions: [Subscription] = []
        if let plan = decision.plan, let terms = decision.terms {
            let subscription = Subscription(
                id: newIdentifier(now: now), customerId: customerID, merchantId: merchantID, plan: plan, terms: terms, now: now)
            try SubscriptionRows.insert(subscription, db: db)
            subscriptions.append(subscription)
        }
        let customer = Customer(
            id: customerID, merchantId: merchantID, attributes: command, subscriptions: subscriptions, now: now)
        let reply = CustomerCreated(idempotencyKey: key, defaultPlan: decision.result, customer: customer)
        let record = ReplyRecord(
            type: .customerCreated, idempotencyKey: key, messageID: ReplyMessageID.created(idempotencyKey: key),
            body: reply.canonicalJSON(), replayed: false, errorCode: nil)
        let processed = ProcessedRequest(
            idempotencyKey: key, merchantID: merchantID, fingerprint: fingerprint, customerID: customerID,
            replyType: record.type, messageID: record.messageID, replyBody: record.body)
        try processed.insert(db, now: now)
        return record
    }

    private func conflict(_ command: CreateCustomerCommand, key: String, existingCustomerID: String?, body: [UInt8]) -> ReplyRecord {
        failure(.externalIdConflict(command.externalId), key: key, body: body, existingCustomerID: existingCustomerID)
    }

    /// Failures are not recorded: a corrected command with the same `externalId` may succeed later.
    private func failure(
        _ rejection: CommandRejection, key: String?, body: [UInt8], existingCustomerID: String? = nil
    ) -> ReplyRecord {
        let reply = CustomerCreateFailed(
            idempotencyKey: key, error: CustomerCreateError(rejection, existingCustomerId: existingCustomerID))
        return ReplyRecord(
            type: .customerCreateFailed, idempotencyKey: key,
            messageID: ReplyMessageID.failed(code: rejection.code, idempotencyKey: key, body: body),
            body: reply.canonicalJSON(), replayed: false, errorCode: rejection.code.rawValue)
    }

    private mutating func authenticate(_ apiKey: String?) throws -> Authentication {
        guard let apiKey, !apiKey.isEmpty else { return .unauthorized(.missing) }
        if let cached = authentications[apiKey] { return cached }
        let result = try APIKeys.authenticate(apiKey, db: db)
        authentications[apiKey] = result
        return result
    }

    private mutating func defaultPlan(_ merchantID: String) throws -> Plan? {
        if let cached = defaultPlans[merchantID] { return cached }
        let plan = try PlanRows.defaultPlan(merchantID: merchantID, db: db)
        defaultPlans[merchantID] = plan
        return plan
    }
}
