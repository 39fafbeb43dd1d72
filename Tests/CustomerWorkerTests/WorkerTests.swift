import AMQP
import BrokerTestSupport
import CreateCustomer
import CustomerWorker
import Foundation
import Testing

/// A catalog with one default plan shaped by the arguments.
func defaultPlanCatalog(price: Int = 0, trialDays: Int = 0, countries: [String]? = nil, availableFrom: String? = nil,
                        isDefault: Bool = true) -> String {
    var plan = """
        "id":"default-plan","name":"Default","currency":"USD","price":\(price),"billingCadence":"monthly",
        "trialDays":\(trialDays),"isPrivate":false,"status":"available","default":\(isDefault)
        """
    if let countries { plan += ",\"availableCountries\":[\(countries.map { "\"\($0)\"" }.joined(separator: ","))]" }
    if let availableFrom { plan += ",\"availableFrom\":\"\(availableFrom)\"" }
    return "{\"plans\":[{\(plan)}]}"
}

@Suite("Worker: replies for every outcome", .closesResources, .enabled(if: TestBroker.enabled, "no broker: run scripts/broker.sh start"))
struct WorkerTests {
    struct PlanCase: Sendable, CustomTestStringConvertible {
        let name: String
        let catalog: String
        let command: String
        let outcome: String
        let reason: String?
        let active: Int
        let upcoming: Int
        var testDescription: String { name }
    }

    static let planCases: [PlanCase] = [
        PlanCase(name: "free plan", catalog: defaultPlanCatalog(), command: #"{"externalId":"c-1"}"#,
                 outcome: "subscribed", reason: nil, active: 1, upcoming: 0),
        PlanCase(name: "trial", catalog: defaultPlanCatalog(price: 2900, trialDays: 14), command: #"{"externalId":"c-1"}"#,
                 outcome: "trial_started", reason: nil, active: 1, upcoming: 0),
        PlanCase(name: "paid with Stripe", catalog: defaultPlanCatalog(price: 2900), command: #"{"externalId":"c-1","stripeId":"cus_1"}"#,
                 outcome: "subscribed", reason: nil, active: 1, upcoming: 0),
        PlanCase(name: "paid without payment method", catalog: defaultPlanCatalog(price: 2900), command: #"{"externalId":"c-1"}"#,
                 outcome: "not_eligible", reason: "payment_method_required", active: 0, upcoming: 0),
        PlanCase(name: "country not supported", catalog: defaultPlanCatalog(countries: ["DE"]),
                 command: #"{"externalId":"c-1","billingCountry":"us"}"#,
                 outcome: "not_eligible", reason: "country_not_supported", active: 0, upcoming: 0),
        PlanCase(name: "available later", catalog: defaultPlanCatalog(availableFrom: "2099-01-01T00:00:00.000Z"),
                 command: #"{"externalId":"c-1"}"#, outcome: "scheduled", reason: nil, active: 0, upcoming: 1),
        PlanCase(name: "no default plan", catalog: defaultPlanCatalog(isDefault: false), command: #"{"externalId":"c-1"}"#,
                 outcome: "no_default_plan", reason: nil, active: 0, upcoming: 0),
    ]

    @Test(arguments: StoreKind.all, planCases)
    func defaultPlanOutcome(_ kind: StoreKind, _ planCase: PlanCase) async throws {
        let fixture = try await WorkerFixture("plan", store: kind)
        let merchant = try await fixture.merchant(catalog: planCase.catalog)
        let reply = try await fixture.withWorker {
            try await fixture.send(json: planCase.command, apiKey: merchant.secretKey)
        }
        let body = try json(reply)
        #expect(body["type"] as? String == "CustomerCreated")
        let defaultPlan = try #require(body["defaultPlan"] as? [String: Any])
        #expect(defaultPlan["outcome"] as? String == planCase.outcome)
        #expect(defaultPlan["reason"] as? String == planCase.reason)
        let customer = try #require(body["customer"] as? [String: Any])
        #expect((customer["activeSubscriptions"] as? [Any])?.count == planCase.active)
        #expect((customer["upcomingSubscriptions"] as? [Any])?.count == planCase.upcoming)
        #expect(reply.properties.type == "CustomerCreated")
        #expect(try await fixture.store.customerCount() == 1)
        await fixture.tearDown()
    }

    @Test(arguments: StoreKind.all)
    func replyPropertiesFollowTheContract(_ kind: StoreKind) async throws {
        let fixture = try await WorkerFixture("properties", store: kind)
        let merchant = try await fixture.merchant()
        let (withCorrelation, withoutCorrelation) = try await fixture.withWorker {
            let first = try await fixture.send(json: #"{"externalId":"c-1"}"#, apiKey: merchant.secretKey, messageID: "m-1", correlationID: "corr-1")
            let second = try await fixture.send(json: #"{"externalId":"c-2"}"#, apiKey: merchant.secretKey, messageID: "m-2")
            return (first, second)
        }
        #expect(withCorrelation.properties.correlationID == "corr-1")
        #expect(withoutCorrelation.properties.correlationID == "m-2")
        for reply in [withCorrelation, withoutCorrelation] {
            let properties = reply.properties
            #expect(properties.contentType == "application/json")
            #expect(properties.persistent == true)
            #expect(properties.type == "CustomerCreated")
            #expect(properties.appID == "customer-worker")
            #expect(properties.timestamp != nil)
            #expect(properties.messageID?.isEmpty == false)
            #expect(properties.headers["x-replayed"] == .bool(false))
            let key = try #require(properties.headers["x-idempotency-key"]?.stringValue)
            #expect(try json(reply)["idempotencyKey"] as? String == key)
        }
        // The events exchange got a copy of each reply, with its routing key.
        var copies: [Delivery] = []
        _ = try await fixture.client.read(count: 2, idleTimeout: .seconds(5)) { copies.append($0) }
        #expect(copies.map(\.routingKey) == ["customer.created", "customer.created"])
        #expect(copies.map(\.body) == [withCorrelation.body, withoutCorrelation.body])
        await fixture.tearDown()
    }

    @Test(arguments: StoreKind.all)
    func theSameCommandFiftyTimesMakesOneCustomerAndIdenticalReplies(_ kind: StoreKind) async throws {
        let fixture = try await WorkerFixture("duplicates", store: kind)
        let merchant = try await fixture.merchant()
        let body = Array(#"{"externalId":"dup-1","name":"Ada","email":"ada@example.com"}"#.utf8)
        let commands = (0..<50).map { CommandClient.Command(body: body, messageID: "attempt-\($0)") }
        let (replies, conflict) = try await fixture.withWorker {
            let replies = try await fixture.send(commands, apiKey: merchant.secretKey)
            let conflict = try await fixture.send(json: #"{"externalId":"dup-1","name":"Someone else"}"#, apiKey: merchant.secretKey)
            return (replies, conflict)
        }
        #expect(replies.count == 50)
        #expect(Set(replies.map(\.body)).count == 1)
        #expect(Set(replies.map(\.properties.messageID)).count == 1)
        #expect(replies.filter { $0.properties.headers["x-replayed"] == .bool(true) }.count == 49)
        #expect(try await fixture.store.customerCount() == 1)

        let error = try #require(try json(conflict)["error"] as? [String: Any])
        #expect(error["code"] as? String == "external_id_conflict")
        let customer = try #require(try json(replies[0])["customer"] as? [String: Any])
        #expect(error["existingCustomerId"] as? String == customer["id"] as? String)
        await fixture.tearDown()
    }

    @Test(arguments: StoreKind.all)
    func everyErrorCodeGetsAFailureReply(_ kind: StoreKind) async throws {
        let fixture = try await WorkerFixture("errors", store: kind)
        let merchant = try await fixture.merchant()
        let revoked = try await fixture.store.createAPIKey(merchantID: merchant.merchantId, type: .secret)
        try await fixture.store.revokeAPIKey(revoked)
        let tooLarge = "{\"externalId\":\"big\",\"name\":\"" + String(repeating: "x", count: 64 * 1024) + "\"}"
        let key = merchant.secretKey
        let cases: [(String, String?, String?, String)] = [
            // body, API key, content type, expected code
            ("{not json", key, "application/json", "malformed_message"),
            ("[1,2,3]", key, "application/json", "malformed_message"),
            (#"{"externalId":"c-1"}"#, key, "text/plain", "unsupported_content_type"),
            (tooLarge, key, "application/json", "message_too_large"),
            (#"{"externalId":"c-1"}"#, nil, "application/json", "unauthorized"),
            (#"{"externalId":"c-1"}"#, "sk_unknown_0000", "application/json", "unauthorized"),
            (#"{"externalId":"c-1"}"#, revoked, "application/json", "unauthorized"),
            (#"{"externalId":"c-1"}"#, merchant.publishableKey, "application/json", "forbidden"),
            (#"{"externalId":" c-1","email":"nope","billingZipCode":"123","colour":"red"}"#, key, "application/json", "validation_failed"),
        ]
        let replies = try await fixture.withWorker {
            var replies: [Delivery] = []
            for (body, apiKey, contentType, _) in cases {
                replies.append(try await fixture.send(json: body, apiKey: apiKey, contentType: contentType))
            }
            return replies
        }
        for ((_, _, _, expected), reply) in zip(cases, replies) {
            let error = try #require(try json(reply)["error"] as? [String: Any])
            #expect(error["code"] as? String == expected)
            #expect(reply.properties.type == "CustomerCreateFailed")
            #expect(reply.properties.headers["x-replayed"] == .bool(false))
        }
        let validation = try #require(try json(replies.last!)["error"] as? [String: Any])
        let fields = try #require(validation["fields"] as? [[String: Any]]).compactMap { $0["field"] as? String }
        #expect(Set(fields) == ["externalId", "email", "billingZipCode", "colour"])
        let forbidden = try #require(try json(replies[7])["error"] as? [String: Any])
        #expect(forbidden["message"] as? String == "API key must be of type secret")
        #expect(try await fixture.store.customerCount() == 0)
        await fixture.tearDown()
    }

    @Test(arguments: StoreKind.all)
    func theSameExternalIdUnderTwoMerchantsIsTwoCustomers(_ kind: StoreKind) async throws {
        let fixture = try await WorkerFixture("merchants", store: kind)
        let first = try await fixture.merchant()
        let second = try await fixture.merchant()
        let (a, b) = try await fixture.withWorker {
            (try await fixture.send(json: #"{"externalId":"shared"}"#, apiKey: first.secretKey),
             try await fixture.send(json: #"{"externalId":"shared"}"#, apiKey: second.secretKey))
        }
        let customerA = try #require(try json(a)["customer"] as? [String: Any])
        let customerB = try #require(try json(b)["customer"] as? [String: Any])
        #expect(customerA["merchantId"] as? String == first.merchantId)
        #expect(customerB["merchantId"] as? String == second.merchantId)
        #expect(customerA["id"] as? String != customerB["id"] as? String)
        #expect(try await fixture.store.customerCount() == 2)
        await fixture.tearDown()
    }
}
