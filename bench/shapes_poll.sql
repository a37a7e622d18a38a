-- shapes.sh shape 6, consumer: member m<client_id> of consumer group 'g' polls up to 100
-- messages of queue 'p' and commits, per partition it got messages from, the highest offset
-- it received (fenced by its lease). One statement, one transaction.
SELECT mq.commit('p', 'g', s.p, s.o, 'm' || :client_id)
  FROM (SELECT partition AS p, max("offset") AS o
          FROM mq.poll('p', 'g', 'm' || :client_id, 100)
         GROUP BY 1) s;
