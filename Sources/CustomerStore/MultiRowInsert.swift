/// An `INSERT` of several rows in one statement (`VALUES (…), (…), …`), in a few fixed sizes.
///
/// SQLite runs each statement's start and end once however many rows it holds: a cursor opened
/// per B-tree the insert touches, its registers freed at the end (`sqlite3VdbeHalt`). Per row,
/// that was about 5,000 instructions a statement, as much as the row's own insert into a small
/// table. A batch's rows go in chunks of `sizes` (largest first: 128 rows are two statements of
/// 64), so each connection prepares at most `sizes.count` statements per table and keeps them in
/// GRDB's statement cache.
///
/// Each row's parameters are numbered after the previous row's (`?1…?20`, then `?21…?40`), so a
/// column may reuse another's parameter within its row (a customer's `updated_at` is its
/// `created_at`).
struct MultiRowInsert: Sendable {
    /// Rows per statement, largest first; 64 rows of the widest table (20 parameters) stay far
    /// below SQLite's limit of 32,766 parameters per statement.
    static let sizes = [64, 32, 16, 8, 4, 2, 1]

    /// Parameters per row: the largest in `parameterOfEachColumn`.
    let parametersPerRow: Int32
    /// The statement for each size of `sizes`, in the same order.
    private let statements: [String]

    /// `head`: `INSERT INTO table (columns)`; `parameterOfEachColumn`: the 1-based parameter,
    /// within its row, of each column; `tail`: what follows the values (an `ON CONFLICT` clause).
    init(head: String, parameterOfEachColumn: [Int], tail: String) {
        let perRow = parameterOfEachColumn.max() ?? 0
        precondition(perRow > 0 && Set(parameterOfEachColumn) == Set(1...perRow), "every parameter of a row is used")
        parametersPerRow = Int32(perRow)
        statements = Self.sizes.map { rows in
            let values = (0..<rows).map { row in
                "(" + parameterOfEachColumn.map { "?\(row * perRow + $0)" }.joined(separator: ", ") + ")"
            }
            return head + " VALUES " + values.joined(separator: ", ") + (tail.isEmpty ? "" : " " + tail)
        }
    }

    /// The statement inserting `rows` rows, one of `sizes`.
    func sql(rows: Int) -> String {
        guard let position = Self.sizes.firstIndex(of: rows) else { preconditionFailure("\(rows) rows is not one of \(Self.sizes)") }
        return statements[position]
    }

    /// The first parameter of the row at `row` (0-based) within its statement.
    func firstParameter(ofRow row: Int) -> Int32 {
        Int32(row) * parametersPerRow + 1
    }

    /// `rows` cut into consecutive chunks of `sizes`, largest first.
    static func chunks(of rows: Range<Int>) -> [Range<Int>] {
        var chunks: [Range<Int>] = []
        var start = rows.lowerBound
        for size in sizes {
            while rows.upperBound - start >= size {
                chunks.append(start..<(start + size))
                start += size
            }
        }
        return chunks
    }
}
