/// How a batch's rows are cut into statements: chunks of a few fixed sizes, largest first (128
/// rows are two statements of 64).
///
/// SQLite runs each statement's start and end once however many rows it holds: a cursor opened
/// per B-tree it touches, its registers freed at the end (`sqlite3VdbeHalt`). Per row, that was
/// about 5,000 instructions a statement, as much as a row's own insert into a small table. With
/// fixed sizes, each connection prepares at most `sizes.count` statements of a kind and keeps
/// them in GRDB's statement cache.
enum RowChunks {
    /// Rows per statement, largest first; 64 rows of the widest table (20 parameters) stay far
    /// below SQLite's limit of 32,766 parameters per statement.
    static let sizes = [64, 32, 16, 8, 4, 2, 1]

    /// `rows` cut into consecutive chunks of `sizes`, largest first.
    static func of(_ rows: Range<Int>) -> [Range<Int>] {
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

    /// Where `size` is in `sizes`.
    static func position(ofSize size: Int) -> Int {
        guard let position = sizes.firstIndex(of: size) else { preconditionFailure("\(size) rows is not one of \(sizes)") }
        return position
    }
}

/// An `INSERT` of several rows in one statement (`VALUES (…), (…), …`), one statement for each
/// size of `RowChunks.sizes`.
///
/// Each row's parameters are numbered after the previous row's (`?1…?20`, then `?21…?40`), so a
/// column may reuse another's parameter within its row (a customer's `updated_at` is its
/// `created_at`).
struct MultiRowInsert: Sendable {
    /// Parameters per row: the largest in `parameterOfEachColumn`.
    let parametersPerRow: Int32
    /// The statement for each size of `RowChunks.sizes`, in the same order.
    private let statements: [String]

    /// `head`: `INSERT INTO table (columns)`; `parameterOfEachColumn`: the 1-based parameter,
    /// within its row, of each column; `tail`: what follows the values (an `ON CONFLICT` clause).
    init(head: String, parameterOfEachColumn: [Int], tail: String) {
        let perRow = parameterOfEachColumn.max() ?? 0
        precondition(perRow > 0 && Set(parameterOfEachColumn) == Set(1...perRow), "every parameter of a row is used")
        parametersPerRow = Int32(perRow)
        statements = RowChunks.sizes.map { rows in
            let values = (0..<rows).map { row in
                "(" + parameterOfEachColumn.map { "?\(row * perRow + $0)" }.joined(separator: ", ") + ")"
            }
            return head + " VALUES " + values.joined(separator: ", ") + (tail.isEmpty ? "" : " " + tail)
        }
    }

    /// The statement inserting `rows` rows, one of `RowChunks.sizes`.
    func sql(rows: Int) -> String {
        statements[RowChunks.position(ofSize: rows)]
    }

    /// The first parameter of the row at `row` (0-based) within its statement.
    func firstParameter(ofRow row: Int) -> Int32 {
        Int32(row) * parametersPerRow + 1
    }
}
