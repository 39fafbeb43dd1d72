import Testing
@testable import WorkerBenchmark

@Suite("Bench: the tenants report's figures")
struct TenantsReportTests {
    @Test func aSpreadTakesTheNearestRankOfNegativeAndPositiveValues() throws {
        // 200 values, -50 ... 149: the 100th is 49, the 198th is 147.
        let spread = try #require(TenantsReport.Spread((0..<200).reversed().map { Double($0) - 50 }))
        #expect(spread == TenantsReport.Spread(count: 200, p50: 49, p99: 147, max: 149))
        #expect(TenantsReport.Spread([-3]) == TenantsReport.Spread(count: 1, p50: -3, p99: -3, max: -3))
        #expect(TenantsReport.Spread([]) == nil)
    }
}
