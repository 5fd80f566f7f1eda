// Runs one query over and over on one Arrow Flight SQL JDBC connection until a file appears, and
// prints one JSON line per query: whether it worked, how long it took, and the error if not.
//
//   java -cp flight-sql-jdbc-driver.jar KeepQuerying.java JDBC_URL USER PASSWORD SQL STOP_FILE

import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.Properties;

public class KeepQuerying {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        Path stop = Path.of(args[4]);
        try (Connection conn = DriverManager.getConnection(args[0], props)) {
            while (!Files.exists(stop)) {
                long start = System.nanoTime();
                String outcome;
                try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery(args[3])) {
                    long rows = 0;
                    while (rs.next()) rows++;
                    outcome = "\"ok\":true,\"rows\":" + rows;
                } catch (Exception e) {
                    String msg = String.valueOf(e.getMessage()).replace("\\", "/").replace("\"", "'");
                    outcome = "\"ok\":false,\"error\":\"" + msg.substring(0, Math.min(300, msg.length())) + "\"";
                }
                long ms = (System.nanoTime() - start) / 1_000_000;
                System.out.println("{" + outcome + ",\"ms\":" + ms + "}");
                System.out.flush();
                Thread.sleep(100);
            }
        }
    }
}
