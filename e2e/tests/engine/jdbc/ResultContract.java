// Runs each statement given on standard input (one per line) through the Arrow Flight SQL JDBC
// driver and prints one line per statement: the result's columns as the driver describes them
// (name, JDBC type name, nullability) and its rows, or the error the driver raised.
//
//   java -cp flight-sql-jdbc-driver.jar ResultContract.java JDBC_URL USER PASSWORD < statements

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.Statement;
import java.util.Properties;

public class ResultContract {
    static String quote(String s) {
        if (s == null) return "null";
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"': b.append("\\\""); break;
                case '\\': b.append("\\\\"); break;
                case '\n': b.append("\\n"); break;
                default:
                    if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
                    else b.append(c);
            }
        }
        return b.append('"').toString();
    }

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        try (Connection conn = DriverManager.getConnection(args[0], props);
             BufferedReader in = new BufferedReader(new InputStreamReader(System.in))) {
            String sql;
            while ((sql = in.readLine()) != null) {
                if (sql.isBlank()) continue;
                StringBuilder out = new StringBuilder("{\"sql\":").append(quote(sql));
                try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery(sql)) {
                    ResultSetMetaData md = rs.getMetaData();
                    out.append(",\"columns\":[");
                    for (int i = 1; i <= md.getColumnCount(); i++) {
                        if (i > 1) out.append(',');
                        out.append("{\"name\":").append(quote(md.getColumnName(i)))
                           .append(",\"type\":").append(quote(md.getColumnTypeName(i)))
                           .append(",\"nullable\":").append(md.isNullable(i))
                           .append('}');
                    }
                    out.append("],\"rows\":[");
                    boolean first = true;
                    while (rs.next()) {
                        if (!first) out.append(',');
                        first = false;
                        out.append('[');
                        for (int i = 1; i <= md.getColumnCount(); i++) {
                            if (i > 1) out.append(',');
                            Object v = rs.getObject(i);
                            out.append(quote(v == null ? null : String.valueOf(v)));
                        }
                        out.append(']');
                    }
                    out.append(']');
                } catch (Exception e) {
                    out.append(",\"error\":").append(quote(e.getClass().getSimpleName() + ": " + e.getMessage()));
                }
                System.out.println(out.append('}'));
                System.out.flush();
            }
        }
    }
}
