-- ordering.sh workload 2, partitioned side: one member per pgbench client (m<client_id>) of
-- consumer group :grp polls up to 100 messages and commits, per partition it got messages
-- from, the highest offset it received (fenced by its lease). One transaction.
SELECT mq.commit('log', :grp, s.p, s.o, 'm' || :client_id)
  FROM (SELECT partition AS p, max("offset") AS o
          FROM mq.poll('log', :grp, 'm' || :client_id, 100)
         GROUP BY 1) s;
