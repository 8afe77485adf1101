@problemName x
@univariate true
@classLabel true a b a
@data
1,2:a
3,4:b
